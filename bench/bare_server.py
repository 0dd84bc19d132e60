"""The simplest OpenAI-compatible server a user would stand up on plain transformers + peft.

The baseline of ``bench/vs_vllm_serve.py`` for the ``hf`` engine: one process, the base
model loaded with ``AutoModelForCausalLM``, the adapter(s) with ``PeftModel``, and
``model.generate`` behind a tiny starlette app. One generation runs at a time (a lock):
the model and which of its adapters is active are shared state, and a first server does
not batch. ``POST /v1/chat/completions`` (streamed or not, with ``usage``) and
``GET /v1/models``; the base model is ``--served-model-name``, each adapter its own name,
as with ``vllm serve --lora-modules``.

    python bench/bare_server.py --model DIR --lora-modules bench=ADAPTER_DIR --port 8001
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import threading
import time
import uuid


def build_app(model_dir: str, adapters: dict[str, str], served_name: str = "base"):
    import torch
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse, StreamingResponse
    from starlette.routing import Route
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.generation.streamers import BaseStreamer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    if adapters:
        from peft import PeftModel

        (first, path), *rest = adapters.items()
        model = PeftModel.from_pretrained(model, path, adapter_name=first)
        for name, path in rest:
            model.load_adapter(path, adapter_name=name)
    model.eval()
    lock = threading.Lock()

    class _Tokens(BaseStreamer):
        """Hands each new token id to the event loop (the first put is the prompt)."""

        def __init__(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue) -> None:
            self.loop, self.queue, self.prompt_seen = loop, queue, False

        def put(self, value) -> None:
            if not self.prompt_seen:
                self.prompt_seen = True
                return
            self.loop.call_soon_threadsafe(self.queue.put_nowait, value.flatten().tolist())

        def end(self) -> None:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, None)

    def generate(ids, name: str, body: dict, streamer: _Tokens) -> None:
        greedy = float(body.get("temperature", 1.0)) == 0.0
        sampling = {} if greedy else {"temperature": float(body["temperature"]),
                                      "top_p": float(body.get("top_p", 1.0))}
        try:
            with lock, torch.inference_mode():
                if adapters and name == served_name:
                    scope = model.disable_adapter()
                else:
                    scope = contextlib.nullcontext()
                    if adapters:
                        model.set_adapter(name)
                with scope:
                    model.generate(ids, attention_mask=torch.ones_like(ids),
                                   max_new_tokens=int(body.get("max_tokens") or 64),
                                   do_sample=not greedy, streamer=streamer,
                                   pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
                                   **sampling)
        except BaseException:
            streamer.end()
            raise

    async def pieces(ids, name: str, body: dict):
        """(text delta, tokens so far) as tokens come; ``None`` ends it."""
        queue: asyncio.Queue = asyncio.Queue()
        loop = asyncio.get_running_loop()
        thread = threading.Thread(target=generate, daemon=True,
                                  args=(ids, name, body, _Tokens(loop, queue)))
        thread.start()
        tokens: list[int] = []
        sent = ""
        while (new := await queue.get()) is not None:
            tokens += new
            text = tokenizer.decode(tokens, skip_special_tokens=True)
            if text.endswith("\ufffd"):  # half a UTF-8 character: wait for the rest
                continue
            delta, sent = text[len(sent):], text
            yield delta, len(tokens)
        text = tokenizer.decode(tokens, skip_special_tokens=True)
        yield text[len(sent):], len(tokens)

    def chunk(cid: str, name: str, delta: dict | None, finish: str | None = None, **extra):
        choices = [] if delta is None else [{"index": 0, "delta": delta,
                                             "finish_reason": finish}]
        return "data: " + json.dumps({"id": cid, "object": "chat.completion.chunk",
                                      "created": int(time.time()), "model": name,
                                      "choices": choices, **extra}) + "\n\n"

    async def chat(request):
        body = await request.json()
        name = body.get("model")
        if name != served_name and name not in adapters:
            return JSONResponse({"error": {"message": f"unknown model {name!r}"}}, 404)
        text = tokenizer.apply_chat_template(body["messages"], add_generation_prompt=True,
                                             tokenize=False)
        ids = tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids
        max_tokens = int(body.get("max_tokens") or 64)
        cid = f"chatcmpl-{uuid.uuid4().hex}"

        def usage(completion: int) -> dict:
            return {"prompt_tokens": ids.shape[1], "completion_tokens": completion,
                    "total_tokens": ids.shape[1] + completion}

        if not body.get("stream"):
            parts = [piece async for piece in pieces(ids, name, body)]
            count = parts[-1][1]  # the last piece always comes, with the tokens made
            finish = "length" if count >= max_tokens else "stop"
            return JSONResponse({
                "id": cid, "object": "chat.completion", "created": int(time.time()),
                "model": name, "usage": usage(count),
                "choices": [{"index": 0, "finish_reason": finish,
                             "message": {"role": "assistant",
                                         "content": "".join(d for d, _ in parts)}}]})

        async def events():
            yield chunk(cid, name, {"role": "assistant", "content": ""})
            count = 0
            async for delta, made in pieces(ids, name, body):
                count = made
                if delta:
                    yield chunk(cid, name, {"content": delta})
            yield chunk(cid, name, {}, "length" if count >= max_tokens else "stop")
            if (body.get("stream_options") or {}).get("include_usage"):
                yield chunk(cid, name, None, usage=usage(count))
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    async def models(request):
        return JSONResponse({"object": "list", "data": [
            {"id": n, "object": "model"} for n in (served_name, *adapters)]})

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"]),
                             Route("/v1/models", models)])


def main(argv=None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="model directory")
    parser.add_argument("--served-model-name", default="base")
    parser.add_argument("--lora-modules", nargs="*", default=[], metavar="NAME=DIR")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args(argv)
    adapters = dict(item.split("=", 1) for item in args.lora_modules)
    app = build_app(args.model, adapters, args.served_model_name)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
