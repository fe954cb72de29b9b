"""The report as blocks, rendered twice: `to_html(blocks, images)` (one self-contained page, images
as data URIs, no script, no network) and `to_markdown(blocks)` (the same content for terminals).

A block is a tuple: ("h1"|"h2"|"p"|"meta"|"verdict", text), ("list", items), ("table", header,
rows), ("img", name, caption), ("examples", [{outcome, problem, answer, tokens, reference,
reasoning}]). Text is plain (escaped here).
"""
from __future__ import annotations

import base64
import html
import re

Block = tuple

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;background:#f5f7fa;
color:#1f2933;line-height:1.45}
main{max-width:1120px;margin:0 auto;padding:24px 32px 48px}
h1{font-size:26px;margin:8px 0 4px}h2{font-size:19px;margin:32px 0 8px;padding-top:8px;
border-top:1px solid #d9e2ec}
p{margin:6px 0}.meta{color:#52606d;font-size:13px}
table{border-collapse:collapse;margin:8px 0 12px;background:#fff;font-size:13px}
th,td{border:1px solid #d9e2ec;padding:4px 10px;text-align:left;vertical-align:top}
th{background:#eef2f7}td.n{text-align:right;font-variant-numeric:tabular-nums}
img{max-width:100%;background:#fff;border:1px solid #d9e2ec;border-radius:4px;margin:6px 0}
figure{margin:8px 0}figcaption{color:#52606d;font-size:12px}
.verdict{background:#fff;border-left:5px solid #9aa5b1;padding:8px 14px;margin:8px 0;font-size:15px}
.verdict.better{border-color:#2f9e44}.verdict.worse{border-color:#c0392b}
table.examples{width:100%}table.examples td{max-width:360px}table.examples pre{max-height:160px}
pre{white-space:pre-wrap;word-break:break-word;background:#f8fafc;padding:4px 6px;margin:0;
font-size:12px;max-height:320px;overflow:auto}
details summary{cursor:pointer;color:#1e6fa8;font-size:13px}
ul{margin:4px 0 8px;padding-left:22px;font-size:13px;color:#3e4c59}
"""


def _esc(text: object) -> str:
    return html.escape(str(text))


def _cell(value: object) -> str:
    text = str(value)
    numeric = re.fullmatch(r"[+-]?[\d,]+(\.\d+)?", text) is not None
    return f'<td class="n">{_esc(text)}</td>' if numeric else f"<td>{_esc(text)}</td>"


def _verdict_class(text: str) -> str:
    for side in ("better", "worse"):
        if f"student is {side}" in text:
            return side
    return ""


def _example_row(e: dict) -> str:
    """One example trace as a table row, its reasoning collapsed."""
    reasoning = (f"<details><summary>{len(e['reasoning']):,} characters</summary>"
                 f"<pre>{_esc(e['reasoning'])}</pre></details>" if e["reasoning"] else "none")
    return (f"<tr><td>{_esc(e['outcome'])}</td><td><pre>{_esc(e['problem'])}</pre></td>"
            f"<td>{reasoning}</td><td><pre>{_esc(e['answer'])}</pre></td>"
            f'<td>{_esc(e["reference"])}</td><td class="n">{e["tokens"]:,}</td></tr>')


def to_html(blocks: list[Block], images: dict[str, bytes], title: str) -> str:
    """One page: every image inline as a data URI, reasoning collapsed in <details>."""
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>{_esc(title)}</title><style>{CSS}</style></head><body><main>"]
    for block in blocks:
        kind = block[0]
        if kind == "h1":
            out.append(f"<h1>{_esc(block[1])}</h1>")
        elif kind == "h2":
            out.append(f'<h2 id="{_esc(block[1].lower().replace(" ", "-"))}">{_esc(block[1])}</h2>')
        elif kind == "p":
            out.append(f"<p>{_esc(block[1])}</p>")
        elif kind == "meta":
            out.append(f'<p class="meta">{_esc(block[1])}</p>')
        elif kind == "list":
            out.append("<ul>" + "".join(f"<li>{_esc(item)}</li>" for item in block[1]) + "</ul>")
        elif kind == "verdict":
            out.append(f'<div class="verdict {_verdict_class(block[1])}">{_esc(block[1])}</div>')
        elif kind == "table":
            head = "".join(f"<th>{_esc(h)}</th>" for h in block[1])
            body = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in block[2])
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif kind == "img" and block[1] in images:
            data = base64.b64encode(images[block[1]]).decode()
            out.append(f'<figure><img alt="{_esc(block[2])}" src="data:image/png;base64,{data}">'
                       f"<figcaption>{_esc(block[2])}</figcaption></figure>")
        elif kind == "examples":
            rows = "".join(_example_row(e) for e in block[1])
            out.append('<table class="examples"><thead><tr><th>outcome</th><th>problem</th>'
                       "<th>reasoning</th><th>answer</th><th>reference</th><th>tokens</th></tr>"
                       f"</thead><tbody>{rows}</tbody></table>")
    out.append("</main></body></html>")
    return "\n".join(out)


def _md_escape(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _clip(text: str, limit: int) -> str:
    text = text.strip()
    if len(text) <= limit:
        return text
    return text[:limit].rstrip() + f" ... ({len(text):,} characters)"


def to_markdown(blocks: list[Block]) -> str:
    """The same blocks as Markdown (images by file name beside summary.md, reasoning clipped)."""
    out: list[str] = []
    for block in blocks:
        kind = block[0]
        if kind == "h1":
            out += [f"# {block[1]}", ""]
        elif kind == "h2":
            out += [f"## {block[1]}", ""]
        elif kind in ("p", "meta"):
            out += [block[1], ""]
        elif kind == "list":
            out += [f"- {item}" for item in block[1]] + [""]
        elif kind == "verdict":
            out += [f"**Verdict:** {block[1]}", ""]
        elif kind == "table":
            out += ["| " + " | ".join(map(_md_escape, block[1])) + " |",
                    "|" + "---|" * len(block[1])]
            out += ["| " + " | ".join(map(_md_escape, row)) + " |" for row in block[2]] + [""]
        elif kind == "img":
            out += [f"![{block[2]}]({block[1]}.png)", ""]
        elif kind == "examples":
            out += ["| outcome | problem | reasoning | answer | reference | tokens |",
                    "|---|---|---|---|---|---|"]
            out += [f"| {e['outcome']} | {_md_escape(_clip(e['problem'], 120))} | "
                    f"{_md_escape(_clip(e['reasoning'], 160)) or '(none)'} | "
                    f"{_md_escape(_clip(e['answer'], 120))} | {_md_escape(e['reference'])} | "
                    f"{e['tokens']:,} |" for e in block[1]] + [""]
    return "\n".join(out)
