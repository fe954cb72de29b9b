"""A real OpenAI-compatible chat-completions server for tests, on 127.0.0.1 at a free port.

    with ChatServer(rules={"63 minus": Behaviour(mode="garbage")}) as srv:
        HttpEndpointConfig(base_url=srv.base_url)       # http://127.0.0.1:PORT/v1
        ...
        srv.count("63 minus")                           # requests received for that prompt

It answers `POST /v1/chat/completions` like vLLM or DeepSeek's API: deterministic answers
(`answer_for`), `usage` counted in whitespace words (`count_tokens`), and the behaviour of the
first rule whose key occurs in the last user message (else `default`):

- mode "answer": content '<think>\\n...\\n</think>\\n\\nThe answer is \\\\boxed{42}.'
- mode "reasoning": DeepSeek's `reasoning_content` + the answer as content; "reasoning_vllm":
  vLLM's newer `reasoning` field.
- mode "slow": waits `delay_s` first (past the client's timeout); "trickle": sends 200 and a blank
  line every 50 ms for `delay_s` (DeepSeek's keep-alive), then the JSON.
- mode "judge": acts as a judge model on data.verify's judge prompt (YES/NO, see judge_verdict).
- mode "garbage" (non-JSON 200), "no_choices" (JSON without choices), "empty" (content "").
- mode "status": `status` with an OpenAI error body carrying `message`.
- `fail_first=N`: the first N requests for each prompt fail with `fail_with` (a status code,
  sending `retry_after` as Retry-After when given; "drop": close without answering; "busy":
  DeepSeek's 200 with finish_reason insufficient_system_resource), then the mode applies.
- `jitter_s`: waits a random time up to jitter_s first, so requests finish out of order, as on a
  loaded server.
- `api_key`: requests without `Authorization: Bearer <api_key>` get 401.
- `echo_credentials=True`: every error body (401, mode "status", `fail_first` statuses) repeats
  the request's Authorization header, as careless servers and proxies do; mode "echo" answers 200
  with that header inside the reasoning and the answer.
- `seeded=True`: like vLLM with per-request seeds, the answer depends on the request's `seed`
  (one of three wordings of the reasoning, `answer_for(..., seed=)`): the same seed gives the
  same answer, other seeds may differ. Off by default: the answer depends on the prompt only.

Every request is recorded (`received`: prompt, JSON body, Authorization header, arrival time) and
the most requests ever handled at once is `max_active`; `aborted` counts answers the client hung
up on (seen within 50 ms in mode "trickle"). Waits end early when the server stops.
"""
from __future__ import annotations

import json
import random
import re
import threading
import time
from dataclasses import dataclass, field

from tests.loopback import LoopbackHandler, LoopbackServer

OPS = {"plus": ("+", lambda a, b: a + b), "minus": ("-", lambda a, b: a - b),
       "times": ("*", lambda a, b: a * b)}
OPS.update({sym: (sym, fn) for sym, fn in OPS.values()})


@dataclass
class Behaviour:
    mode: str = "answer"
    delay_s: float = 0.0
    jitter_s: float = 0.0
    fail_first: int = 0
    fail_with: int | str = 503
    retry_after: str | None = None
    status: int = 400
    message: str = "This model's maximum context length is 16 tokens."


@dataclass
class Received:
    prompt: str
    body: dict | None
    authorization: str | None
    at: float = field(default_factory=time.monotonic)


LEADS = ("We need", "Let me work out", "First, compute")  # the wording a seed picks


def solve(prompt: str, seed: int | None = None) -> tuple[str, str]:
    """(reasoning, final answer) for 'What is A plus|minus|times B?', else a fixed pair; the
    reasoning's first words are LEADS[seed % 3] (LEADS[0] without a seed)."""
    m = re.search(r"What is (\d+) (plus|minus|times|\+|-|\*) (\d+)\?", prompt)
    if not m:
        return "There is no arithmetic question here, so I answer zero.", "0"
    a, word, b = int(m[1]), m[2], int(m[3])
    sym, fn = OPS[word]
    lead = LEADS[0 if seed is None else seed % len(LEADS)]
    return f"{lead} {a} {word} {b}.\n{a} {sym} {b} = {fn(a, b)}.", str(fn(a, b))


def judge_verdict(prompt: str) -> str:
    """Mode "judge": compare the reference and the student's answer in a judge prompt (case,
    spaces and \\text{} ignored) and answer YES or NO on the last line, as a judge model would."""
    ref = re.search(r"Reference answer:\n(.*?)\n\n", prompt, re.S)
    ans = re.search(r"Student's final answer:\n(.*?)\n\n", prompt, re.S)
    if not ref or not ans:
        return "I cannot tell.\nNO"

    def norm(text: str) -> str:
        return re.sub(r"\\text\{([^}]*)\}", r"\1", text).replace(" ", "").lower()

    same = norm(ref.group(1)) == norm(ans.group(1))
    return f"<think>\nComparing the two answers.\n</think>\n\n{'YES' if same else 'NO'}"


def answer_for(prompt: str, mode: str = "answer",
               seed: int | None = None) -> tuple[str, str | None]:
    """(content, reasoning) the server sends for `prompt` in `mode` (and `seed`, when seeded)."""
    if mode == "judge":
        return judge_verdict(prompt), None
    reasoning, final = solve(prompt, seed)
    answer = f"The answer is \\boxed{{{final}}}."
    if mode in ("reasoning", "reasoning_vllm"):
        return answer, reasoning
    return f"<think>\n{reasoning}\n</think>\n\n{answer}", None


def count_tokens(*texts: str | None) -> int:
    return sum(len(t.split()) for t in texts if t)


def completion(body: dict, mode: str, finish_reason: str = "stop", seeded: bool = False) -> dict:
    messages = body.get("messages") or []
    prompt = last_user(messages)
    content, reasoning = answer_for(prompt, mode, body.get("seed") if seeded else None)
    message = {"role": "assistant", "content": "" if mode == "empty" else content}
    if reasoning is not None:
        message["reasoning" if mode == "reasoning_vllm" else "reasoning_content"] = reasoning
    return {
        "id": "chatcmpl-test", "object": "chat.completion", "created": 0, "model": body.get("model"),
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
        "usage": {"prompt_tokens": count_tokens(*(m.get("content") for m in messages)),
                  "completion_tokens": count_tokens(content, reasoning),
                  "total_tokens": 0},
    }


def last_user(messages: list) -> str:
    users = [m.get("content", "") for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    return users[-1] if users else ""


class _Handler(LoopbackHandler):
    def do_GET(self) -> None:  # no GET route (a hub client's whoami, /v1/models): 404
        self._json(404, {"error": {"message": f"Not found: {self.path}"}})

    def do_POST(self) -> None:
        owner = self.server.owner
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        prompt = last_user(body.get("messages", [])) if isinstance(body, dict) else ""
        nth = owner._record(Received(prompt, body, self.headers.get("Authorization")))
        try:
            self._respond(owner, body, prompt, nth)
        except (BrokenPipeError, ConnectionResetError):
            owner._aborted()  # the client hung up mid-answer (its timeout, or a cancel)
        finally:
            owner._done()

    def _respond(self, owner: ChatServer, body: dict | None, prompt: str, nth: int) -> None:
        if self.path.rstrip("/") != "/v1/chat/completions":
            return self._json(404, {"error": {"message": f"Not found: {self.path}"}})
        if owner.api_key and self.headers.get("Authorization") != f"Bearer {owner.api_key}":
            return self._json(401, {"error": {"message": "Incorrect API key provided",
                                              "type": "authentication_error"}})
        if not isinstance(body, dict):
            return self._json(400, {"error": {"message": "body is not JSON"}})
        b = owner.behaviour(prompt)
        if nth <= b.fail_first:
            return self._fail(b, body)
        if b.jitter_s:
            owner.stopping.wait(random.uniform(0.0, b.jitter_s))
        if b.mode == "slow":
            owner.stopping.wait(b.delay_s)
        if b.mode == "trickle":
            return self._trickle(owner, b, body)
        if b.mode == "garbage":
            return self._send(200, b"<html>502 Bad Gateway</html>", "text/html")
        if b.mode == "no_choices":
            return self._json(200, {"id": "chatcmpl-test", "object": "chat.completion"})
        if b.mode == "status":
            return self._json(b.status, {"error": {"message": b.message, "type": "invalid_request_error"}})
        if b.mode == "echo":
            out = completion(body, "answer", seeded=owner.seeded)
            message = out["choices"][0]["message"]
            said = f"You sent {self.headers.get('Authorization')}."
            message["content"] = message["content"].replace("<think>\n", f"<think>\n{said} ") + said
            return self._json(200, out)
        self._json(200, completion(body, b.mode, seeded=owner.seeded))

    def _fail(self, b: Behaviour, body: dict) -> None:
        if b.fail_with == "drop":
            self.close_connection = True
            return
        if b.fail_with == "busy":
            return self._json(200, completion(body, "answer", "insufficient_system_resource"))
        headers = {"Retry-After": b.retry_after} if b.retry_after is not None else {}
        self._json(int(b.fail_with), {"error": {"message": "Server busy, try again"}}, headers)

    def _trickle(self, owner: ChatServer, b: Behaviour, body: dict) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        end = time.monotonic() + b.delay_s
        while time.monotonic() < end and not owner.stopping.wait(0.05):
            self.wfile.write(b"\n")
            self.wfile.flush()
        self.wfile.write(json.dumps(completion(body, "answer", seeded=owner.seeded)).encode())

    def _json(self, status: int, obj: dict, headers: dict | None = None) -> None:
        if status >= 400 and self.server.owner.echo_credentials:
            obj["error"]["message"] += f" (request had Authorization: {self.headers.get('Authorization')})"
        self._send(status, json.dumps(obj).encode(), "application/json", headers)

    def _send(self, status: int, data: bytes, ctype: str, headers: dict | None = None) -> None:
        self.reply(status, data, ctype, headers)


class ChatServer(LoopbackServer):
    """The server; `start()`/`stop()` or use it as a context manager."""

    def __init__(self, default: Behaviour | None = None, rules: dict[str, Behaviour] | None = None,
                 api_key: str | None = None, seeded: bool = False, echo_credentials: bool = False):
        self.default = default or Behaviour()
        self.echo_credentials = echo_credentials
        self.seeded = seeded
        self.rules = rules or {}
        self.api_key = api_key
        self.received: list[Received] = []
        self.max_active = 0
        self.aborted = 0
        self._active = 0
        self._per_prompt: dict[str, int] = {}
        self._lock = threading.Lock()
        super().__init__(_Handler, name="chat-test-server")

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def behaviour(self, prompt: str) -> Behaviour:
        return next((b for key, b in self.rules.items() if key in prompt), self.default)

    def count(self, contains: str = "") -> int:
        with self._lock:
            return sum(contains in r.prompt for r in self.received)

    def _record(self, rec: Received) -> int:
        """Record a request; returns how many requests this prompt has had, this one included."""
        with self._lock:
            self.received.append(rec)
            self._active += 1
            self.max_active = max(self.max_active, self._active)
            self._per_prompt[rec.prompt] = self._per_prompt.get(rec.prompt, 0) + 1
            return self._per_prompt[rec.prompt]

    def _aborted(self) -> None:
        with self._lock:
            self.aborted += 1

    @property
    def active(self) -> int:
        with self._lock:
            return self._active

    def _done(self) -> None:
        with self._lock:
            self._active -= 1

