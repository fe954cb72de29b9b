"""An OpenAI-compatible HTTP teacher (backend: openai): `HttpTeacher(cfg, seed).generate(requests)`.

Works with DeepSeek's API, `vllm serve`, SGLang, or any server speaking `POST
{base_url}/chat/completions`. Requests are rows with `request_id` and `messages`; result frames
(every `cfg.shard_rows` finished rows, and the rest at the end) have exactly RESULT_COLUMNS:
`request_id`, `text` (the message content), `reasoning` (`reasoning_content`, or vLLM's newer
`reasoning`, else None), `prompt_tokens`, `completion_tokens` (from `usage`), `finish_reason`,
`error` (None, or a short message; such a row becomes a `teacher_error` reject downstream).

Behaviour per request (`cfg.endpoint`: base_url, api_key_env, timeout_s, max_retries,
concurrency):
- At most `concurrency` requests in flight: asyncio tasks on one background event loop sharing
  one httpx connection pool; closing the iterator early cancels those in flight.
- `timeout_s` bounds the whole request, keep-alive blank lines included (DeepSeek sends those).
- Timeouts, connection errors, 429 (Retry-After honoured, capped at MAX_RETRY_AFTER_S), 5xx and
  DeepSeek's `insufficient_system_resource` finish are retried up to `max_retries` times with
  capped exponential backoff and jitter; then the row gets e.g. "HTTP 503 after 4 attempts".
- A 200 whose body is not a usable completion -> "malformed response: <what was wrong>".
- Other 4xx (400, 422, ...) are not retried: "HTTP 400: <the server's message>".
- 401/403 (key), 402 (balance) and 404 (base_url or model) concern every row, so they raise a
  DistillError with the fix instead of failing each row; rows finished before are yielded first.
- The key is read from the variable named by `api_key_env`; unset means no Authorization header.
  It is never stored or shown: a server that echoes it (in an error body, or even an answer)
  gets it masked in every field of the row and in errors, before any text is shortened.
- Sampling: model, messages, temperature, top_p, max_tokens, stop (when given), n=1 and a seed
  per request derived from (recipe seed, request_id), so the k samples of a prompt differ and a
  re-run asks for the same ones.

`force_think` is not sent: the OpenAI protocol has no assistant prefill, and whether a server
starts the turn with '<think>\\n' is its chat template's business (DeepSeek-R1's current template
and DeepSeek's API already do; reasoning parsers return the thinking in `reasoning`). The teacher
warns (once per process) and sends the conversation unchanged.
"""
from __future__ import annotations

import asyncio
import json
import os
import queue
import random
import threading
import warnings
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pandas as pd

from distill.engines.sampling import request_seed
from distill.pipeline.errors import DistillError
from distill.pipeline.secrets import redact, watch_env
from distill.teachers.config import TeacherConfig

RESULT_COLUMNS = ["request_id", "text", "reasoning", "prompt_tokens", "completion_tokens",
                  "finish_reason", "error"]
MAX_RETRY_AFTER_S = 120.0
RETRY_FINISH_REASONS = {"insufficient_system_resource"}  # DeepSeek: cut short by server load
FATAL_STATUS = {401: "refused the API key", 402: "refused the request for payment (balance)",
                403: "refused access with this API key", 404: "has no such URL or model"}


class _Retry(Exception):
    """A transient failure: `what` names it ("timeout", "HTTP 503"); `wait_s` is the server's ask."""

    def __init__(self, what: str, wait_s: float | None = None):
        super().__init__(what)
        self.what, self.wait_s = what, wait_s


class _Malformed(Exception):
    pass


class _LoopThread:
    """Runs one coroutine on its own event loop in a daemon thread; `cancel()` stops it and waits."""

    def __init__(self, coro: Coroutine, on_error: Callable[[BaseException], None]):
        self._on_error = on_error
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task | None = None
        self._thread = threading.Thread(target=self._main, args=(coro,), name="distill-http", daemon=True)
        self._thread.start()
        self._ready.wait()

    def _main(self, coro: Coroutine) -> None:
        async def top() -> None:
            self._loop, self._task = asyncio.get_running_loop(), asyncio.current_task()
            self._ready.set()
            await coro

        try:
            asyncio.run(top())
        except asyncio.CancelledError:
            pass
        except Exception as exc:  # noqa: BLE001  (handed to the consumer, which raises it)
            self._on_error(exc)
        finally:
            self._ready.set()

    def cancel(self) -> None:
        if self._thread.is_alive() and self._loop is not None and self._task is not None:
            try:
                self._loop.call_soon_threadsafe(self._task.cancel)
            except RuntimeError:  # the loop closed in between: nothing left to cancel
                pass
        self._thread.join()


def _server_message(resp: Any) -> str:
    """The error text a server sent: OpenAI's {"error": {"message"}}, vLLM's {"message"}, or text."""
    try:
        body = resp.json()
        err = body.get("error", body) if isinstance(body, dict) else body
        msg = err.get("message", err) if isinstance(err, dict) else err
    except ValueError:
        msg = resp.text
    return redact(" ".join(str(msg).split()))[:300] or "(empty body)"


def _retry_after(resp: Any) -> float | None:
    try:
        return min(max(float(resp.headers.get("retry-after", "")), 0.0), MAX_RETRY_AFTER_S)
    except ValueError:
        return None  # absent, or an HTTP date: fall back to our own backoff


def parse_completion(body: bytes) -> dict:
    """One result row's fields from a 200 body; _Malformed names what is wrong with it."""
    try:
        data = json.loads(body)
    except ValueError:
        shown = redact(body.decode("utf-8", "replace")).encode()[:80]
        raise _Malformed(f"not JSON: {shown!r}") from None
    choices = data.get("choices") if isinstance(data, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise _Malformed(f"no choices in {redact(json.dumps(data))[:120]}")
    message = choices[0].get("message")
    if not isinstance(message, dict):
        raise _Malformed("choices[0] has no message")
    text = message.get("content") or ""
    reasoning = message.get("reasoning_content") or message.get("reasoning") or None
    if not isinstance(text, str) or not isinstance(reasoning, (str, type(None))):
        raise _Malformed("message content is not a string")
    if not text and not reasoning:
        raise _Malformed(f"empty content (finish_reason {choices[0].get('finish_reason')!r})")
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    return {"text": text, "reasoning": reasoning,
            "prompt_tokens": int(usage.get("prompt_tokens") or 0),
            "completion_tokens": int(usage.get("completion_tokens") or 0),
            "finish_reason": str(choices[0].get("finish_reason") or "unknown"), "error": None}


def _failed(error: str) -> dict:
    return {"text": "", "reasoning": None, "prompt_tokens": 0, "completion_tokens": 0,
            "finish_reason": "error", "error": error}


def results_frame(rows: list[dict]) -> pd.DataFrame:
    out = pd.DataFrame(rows, columns=RESULT_COLUMNS)
    for col in ("prompt_tokens", "completion_tokens"):
        out[col] = out[col].astype("int64")
    for col in ("reasoning", "error"):
        out[col] = out[col].astype(object).where(out[col].notna(), None)
    return out


class HttpTeacher:
    """A teacher behind an OpenAI-compatible chat-completions endpoint."""

    def __init__(self, cfg: TeacherConfig, seed: int, *, backoff_s: float = 1.0,
                 max_backoff_s: float = 30.0):
        self.cfg, self.seed = cfg, seed
        self.endpoint = cfg.endpoint
        self.url = cfg.endpoint.base_url.rstrip("/") + "/chat/completions"
        self.backoff_s, self.max_backoff_s = backoff_s, max_backoff_s
        watch_env(cfg.endpoint.api_key_env)

    def headers(self) -> dict[str, str]:
        key = os.environ.get(self.endpoint.api_key_env, "")
        return {"Authorization": f"Bearer {key}"} if key else {}

    def payload(self, request_id: str, messages: list[dict]) -> dict:
        s = self.cfg.sampling
        body = {"model": self.cfg.model, "messages": [dict(m) for m in messages],
                "temperature": s.temperature, "top_p": s.top_p, "max_tokens": s.max_tokens,
                "n": 1, "seed": request_seed(self.seed, request_id)}
        if s.stop:
            body["stop"] = list(s.stop)
        return body

    def generate(self, requests: pd.DataFrame) -> Iterator[pd.DataFrame]:
        """Yield result frames of `cfg.shard_rows` finished rows (the last one may be smaller).
        Closing the iterator early cancels the requests in flight and sends no more."""
        import httpx  # noqa: F401  (fail here, not in the request thread, if it is missing)

        if self.cfg.force_think:
            warnings.warn("teacher.force_think has no effect with backend: openai (no prefill in "
                          "the OpenAI protocol); the server's chat template decides how the "
                          "assistant turn starts", UserWarning, stacklevel=2)
        items = list(zip(requests["request_id"].astype(str), requests["messages"]))
        if not items:
            return
        results: queue.Queue = queue.Queue()
        runner = _LoopThread(self._run_all(items, results), on_error=results.put)
        finished: list[dict] = []
        try:
            for _ in range(len(items)):
                got = results.get()
                if isinstance(got, BaseException):
                    raise got
                finished.append(got)
                if len(finished) == self.cfg.shard_rows:
                    yield results_frame(finished)
                    finished = []
        except DistillError:
            if finished:  # rows that finished before the fatal answer are kept
                yield results_frame(finished)
            raise
        finally:
            runner.cancel()
        if finished:
            yield results_frame(finished)

    async def _run_all(self, items: list[tuple[str, Any]], results: queue.Queue) -> None:
        """`concurrency` workers share one connection pool and take requests in order."""
        import httpx

        n = self.endpoint.concurrency
        todo = iter(items)
        halt = False
        async with httpx.AsyncClient(timeout=self.endpoint.timeout_s,
                                     limits=httpx.Limits(max_connections=n)) as client:
            async def worker() -> None:
                nonlocal halt
                for request_id, messages in todo:
                    if halt:
                        return
                    try:
                        results.put(await self._one(client, request_id, messages))
                    except DistillError as err:
                        halt = True
                        results.put(err)

            await asyncio.gather(*(worker() for _ in range(n)))

    async def _one(self, client: Any, request_id: str, messages: Any) -> dict:
        """One request's row, secrets masked in its text fields."""
        row = await self._attempts(client, request_id, messages)
        return {k: redact(v) if isinstance(v, str) else v for k, v in row.items()}

    async def _attempts(self, client: Any, request_id: str, messages: Any) -> dict:
        """One request with retries; always a row, except for fatal (every-row) errors."""
        body = self.payload(request_id, messages)
        attempts = self.endpoint.max_retries + 1
        for attempt in range(attempts):
            try:
                async with asyncio.timeout(self.endpoint.timeout_s):  # whole request, keep-alives too
                    return {"request_id": request_id, **await self._post(client, body)}
            except TimeoutError:
                last = _Retry("timeout")
            except _Retry as exc:
                last = exc
            except _Malformed as exc:
                return {"request_id": request_id, **_failed(f"malformed response: {exc}")}
            except DistillError:
                raise
            except Exception as exc:  # noqa: BLE001  (a client-side surprise must not lose other rows)
                error = redact(f"client error: {type(exc).__name__}: {exc}")[:300]
                return {"request_id": request_id, **_failed(error)}
            if attempt + 1 < attempts:
                await asyncio.sleep(self._delay(attempt, last.wait_s))
        return {"request_id": request_id, **_failed(f"{last.what} after {attempts} attempts")}

    def _delay(self, attempt: int, asked: float | None) -> float:
        backoff = min(self.max_backoff_s, self.backoff_s * 2 ** attempt) * random.uniform(0.5, 1.0)
        return max(backoff, asked) if asked is not None else backoff

    async def _post(self, client: Any, body: dict) -> dict:
        """One attempt: a parsed row, a row-level 4xx, or _Retry / _Malformed / DistillError."""
        import httpx

        try:
            resp = await client.post(self.url, json=body, headers=self.headers())
        except httpx.TimeoutException:
            raise _Retry("timeout") from None
        except httpx.TransportError as exc:
            raise _Retry(f"connection error ({type(exc).__name__})") from None
        status = resp.status_code
        if status == 429 or status >= 500:
            raise _Retry(f"HTTP {status}", _retry_after(resp) if status == 429 else None)
        if status in FATAL_STATUS:
            raise self._fatal(status, _server_message(resp))
        if status >= 400:
            return _failed(f"HTTP {status}: {_server_message(resp)}")
        row = parse_completion(resp.content)
        if row["finish_reason"] in RETRY_FINISH_REASONS:
            raise _Retry(f"finish_reason {row['finish_reason']}")
        return row

    def _fatal(self, status: int, message: str) -> DistillError:
        env = self.endpoint.api_key_env
        what = f"teacher endpoint {self.url} {FATAL_STATUS[status]} (HTTP {status}: {message})"
        if status in (401, 403):
            have = "is set" if os.environ.get(env) else "is not set"
            fix = (f"set the environment variable {env} (teacher.endpoint.api_key_env; it {have}) "
                   "to a valid key for this endpoint, or point api_key_env at the variable that "
                   "holds it")
        elif status == 402:
            fix = "top up the account behind the key, then re-run (finished rows are kept)"
        else:
            fix = (f"check teacher.endpoint.base_url (up to /v1, got {self.endpoint.base_url!r}) "
                   f"and teacher.model ({self.cfg.model!r}: the name the server lists at /models)")
        return DistillError(what, fix=fix)
