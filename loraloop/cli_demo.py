"""`loraloop demo`: the whole loop on the real model, watched live. Merged into
``loraloop.cli``'s app.

Exit 0 when the users' corrections reached them (the taught accuracy reached the
plan's target and the general questions held), 1 when not.
"""

from __future__ import annotations

import json
import time
from typing import Annotated

import httpx
import typer

from loraloop.render import EXIT_ERROR, EXIT_OK, fail, load_settings

app = typer.Typer()


@app.command()
def demo(
    quick: Annotated[bool, typer.Option(
        help="A short story (5 facts, 12 general questions): what CI runs.")] = False,
    keep_running: Annotated[bool, typer.Option(
        help="Leave the demo's stack up at the end, to open its web UI.")] = False,
    port: Annotated[int | None, typer.Option(
        min=1, max=65535, help="Port of the demo's HTTP API (default: a free one).")] = None,
) -> None:
    """Users teach builtin:smollm2 made-up facts through the API; watch it learn them.

    Starts a stack of its own on the embedded defaults in <data dir>/demo, measures
    the base model, then simulated users ask, correct wrong answers and thumb up right
    ones while others keep chatting. The learner trains, gates and promotes through a
    canary. Prints a summary and writes demo-summary.json and learning-curve.png there.
    """
    from loraloop.demo.client import StackClient
    from loraloop.demo.curve import write_curve
    from loraloop.demo.launch import demo_stack
    from loraloop.demo.record import FULL, QUICK, Record
    from loraloop.demo.story import Story
    from loraloop.demo.view import View
    from loraloop.models import resolve_model

    settings = load_settings()
    plan = QUICK if quick else FULL
    stack = demo_stack(settings.data_dir, port)
    typer.echo(f"loraloop demo ({plan.name}): {plan.facts} made-up facts, {plan.general} "
               f"general questions, in {stack.home}")
    started = time.monotonic()
    typer.echo(f"model builtin:smollm2: {resolve_model('builtin:smollm2', settings.data_dir)} "
               "(converted from its wheel at first use)")
    typer.echo("starting the stack: embedded Redis, SQLite, Ray Serve, the learner ...")
    stack.prepare()
    stack.up()
    typer.echo(f"up in {time.monotonic() - started:.0f} s at {stack.url} (web UI: {stack.url}/)")

    record = Record(plan)
    client = StackClient(stack.url, admin_token=stack.admin_token)

    def make_client() -> StackClient:
        return StackClient(stack.url, admin_token=stack.admin_token)

    failure = None
    try:
        with View(record) as view:
            Story(client, plan, record, view.changed, make_client).run()
    except (httpx.HTTPError, TimeoutError) as exc:  # the stack failed the users: say so
        failure = f"{type(exc).__name__}: {exc} (the stack's log: {stack.log})"
    finally:
        client.close()
        if not keep_running:
            typer.echo("stopping the demo's stack ...")
            stack.down()
    if "base" not in record.measured:
        fail(f"the demo stopped before it measured the base model: {failure}")
    summary = {**record.summary(), "error": failure}
    (stack.home / "demo-summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    curve = write_curve(record, stack.home / "learning-curve.png")
    typer.echo(wrap_up(summary, curve))
    if keep_running:
        typer.echo(f"\nthe stack is still up: open {stack.url}/ (Ops tab admin token in "
                   f"{stack.home / 'admin-token'}); stop it with: {stack.stop_hint()}")
    raise typer.Exit(EXIT_OK if summary["reached"] else EXIT_ERROR)


def wrap_up(summary: dict, curve) -> str:
    base, final = summary["base"], summary["final"]
    promotions = [e for e in summary["events"] if e["label"] == "promoted"]
    lines = [
        "",
        f"in {summary['duration_s'] / 60:.1f} min: {summary['requests']} answers, "
        f"{summary['ratings']} ratings, {len(summary['rounds'])} rounds, "
        f"{len(promotions)} promotions",
        f"taught facts      {base['taught_accuracy']:.0%} (base) -> "
        f"{final['taught_accuracy']:.0%} ({final['version'][:12]})",
        f"general questions {base['general_accuracy']:.0%} (base) -> "
        f"{final['general_accuracy']:.0%} ({summary['general_lost']} lost)",
        *[f"round {r['version'][:12]}: {r['outcome']}"
          + (f", feedback to live {r['feedback_to_live_s']:.0f} s"
             if r.get("feedback_to_live_s") is not None else "")
          for r in summary["rounds"]],
        f"learning curve: {curve}",
        *([f"the demo stopped early: {summary['error']}"] if summary["error"] else []),
        "the users' corrections reached them" if summary["reached"] else
        f"the taught accuracy did not reach {summary['target']:.0%} with the general set "
        "holding",
    ]
    return "\n".join(lines)
