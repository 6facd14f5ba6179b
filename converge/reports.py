"""Reports of a plan or an apply for CI servers and people: JUnit XML, Markdown and HTML.

Text and JSON live in `converge.plan`; these three are built from the same `HostPlan` records. The
HTML report is one self-contained file (inline CSS, no script, no network): a fleet's matrix of
hosts by providers, then every host's changes.
"""

from __future__ import annotations

import html
import json
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from converge import __version__
from converge.plan import Change, HostPlan, printable, render_json, render_text, summary

FORMATS = ("text", "json", "junit", "markdown", "html")


def provider_status(plan: HostPlan, provider: str) -> str:
    """in sync, drift, error or skipped: one cell of the hosts x providers matrix."""
    if any(skipped.provider == provider for skipped in plan.skipped):
        return "skipped"
    if any(error.startswith(f"{provider}:") for error in plan.errors):
        return "error"
    # An error no provider owns (unreachable, locked, changed since the plan) is the whole host's.
    if any(not error.startswith(tuple(f"{name}:" for name in plan.providers)) for error in plan.errors):
        return "error"
    if any(change.provider == provider for change in plan.changes):
        return "drift"
    return "in sync"


def providers_of(plans: Sequence[HostPlan]) -> list[str]:
    names = [name for plan in plans for name in plan.providers]
    return list(dict.fromkeys(names))


def _change_text(change: Change) -> str:
    return f"{json.dumps(change.before, default=str)} -> {json.dumps(change.after, default=str)}"


def render_junit(plans: Sequence[HostPlan]) -> str:
    """One test suite per host; a test case per change (a failure: the host differs), per provider
    in sync (passed) or skipped, and an error case for a host or provider that failed."""
    suites = ET.Element("testsuites", name="converge")
    for plan in plans:
        suite = ET.SubElement(suites, "testsuite", name=plan.host)
        cases = failures = errors = skipped = 0
        for change in plan.changes:
            case = ET.SubElement(suite, "testcase", classname=f"{plan.host}.{change.provider}", name=change.resource)
            failure = ET.SubElement(case, "failure", message=f"{change.action}: {_change_text(change)}", type=change.action)
            failure.text = "\n".join([*change.notes, change.detail or ""]).strip() or None
            cases, failures = cases + 1, failures + 1
        for provider in plan.providers:
            status = provider_status(plan, provider)
            if status in ("in sync", "skipped"):
                case = ET.SubElement(suite, "testcase", classname=f"{plan.host}.{provider}", name=f"{provider} in sync")
                if status == "skipped":
                    reason = next(s.reason for s in plan.skipped if s.provider == provider)
                    ET.SubElement(case, "skipped", message=reason)
                    skipped += 1
                cases += 1
        for error in plan.errors:
            case = ET.SubElement(suite, "testcase", classname=plan.host, name="host")
            ET.SubElement(case, "error", message=error)
            cases, errors = cases + 1, errors + 1
        suite.set("tests", str(cases))
        suite.set("failures", str(failures))
        suite.set("errors", str(errors))
        suite.set("skipped", str(skipped))
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"


def _cell(text: str) -> str:
    return printable(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(plans: Sequence[HostPlan]) -> str:
    """A summary for a merge request or $GITHUB_STEP_SUMMARY: hosts x providers, then the changes."""
    providers = providers_of(plans)
    counts = summary(plans)
    lines = [f"### converge: {counts['add']} to add, {counts['update']} to change, {counts['remove']} to remove", "",
             "| host | " + " | ".join(providers) + " |", "|---|" + "---|" * len(providers)]
    for plan in plans:
        lines.append(f"| {_cell(plan.host)} | " + " | ".join(provider_status(plan, p) for p in providers) + " |")
    for plan in plans:
        if not plan.changes and not plan.errors:
            continue
        lines += ["", f"#### {_cell(plan.host)}", ""]
        lines += [f"- **error**: {_cell(error)}" for error in plan.errors]
        if plan.changes:
            lines += ["| provider | resource | action | before | after |", "|---|---|---|---|---|"]
            lines += [f"| {change.provider} | `{_cell(change.resource)}` | {change.action} | "
                      f"`{_cell(json.dumps(change.before, default=str))}` | `{_cell(json.dumps(change.after, default=str))}` |"
                      for change in plan.changes]
    return "\n".join(lines) + "\n"


_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}
.in-sync{background:#e6f4ea}.drift{background:#fff4ce}.error{background:#fde7e9}.skipped{background:#eee;color:#666}
code{font-family:ui-monospace,monospace}h2{margin-top:2em}
"""


def render_html(plans: Sequence[HostPlan]) -> str:
    """One self-contained page: the matrix, then each host's baseline, changes and errors."""
    def esc(text: object) -> str:
        return html.escape(printable(str(text)))

    providers = providers_of(plans)
    counts = summary(plans)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">', "<title>converge report</title>",
        f"<style>{_STYLE}</style></head><body>", "<h1>converge report</h1>",
        f"<p>converge {esc(__version__)}, {esc(stamp)}: {len(plans)} hosts, {counts['add']} to add, "
        f"{counts['update']} to change, {counts['remove']} to remove.</p>",
        '<table id="matrix"><tr><th>host</th>' + "".join(f"<th>{esc(p)}</th>" for p in providers) + "</tr>",
    ]
    for plan in plans:
        cells = "".join(f'<td class="{provider_status(plan, p).replace(" ", "-")}">{provider_status(plan, p)}</td>'
                        for p in providers)
        parts.append(f'<tr><th><a href="#host-{esc(plan.host)}">{esc(plan.host)}</a></th>{cells}</tr>')
    parts.append("</table>")
    for plan in plans:
        parts.append(f'<h2 id="host-{esc(plan.host)}">{esc(plan.host)} <small>{esc(plan.target)}</small></h2>')
        if plan.baseline:
            parts.append(f"<p>baseline {esc(plan.baseline[0])}, sha256 <code>{esc(plan.baseline[1])}</code></p>")
        parts += [f'<p class="error">error: {esc(error)}</p>' for error in plan.errors]
        parts += [f'<p class="skipped">{esc(s.provider)}: skipped: {esc(s.reason)}</p>' for s in plan.skipped]
        parts += [f'<p class="skipped">{esc(n.provider)}: <code>{esc(n.resource)}</code>: {esc(n.reason)}</p>'
                  for n in plan.not_applicable]
        if plan.changes:
            parts.append("<table><tr><th>provider</th><th>resource</th><th>action</th><th>before</th><th>after</th>"
                         "<th>notes</th></tr>")
            parts += [f"<tr><td>{esc(c.provider)}</td><td><code>{esc(c.resource)}</code></td><td>{esc(c.action)}</td>"
                      f"<td><code>{esc(json.dumps(c.before, default=str))}</code></td>"
                      f"<td><code>{esc(json.dumps(c.after, default=str))}</code></td><td>{esc('; '.join(c.notes))}</td></tr>"
                      for c in plan.changes]
            parts.append("</table>")
        elif not plan.errors:
            parts.append('<p class="in-sync">in sync</p>')
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


RENDERERS: dict[str, Callable[[Sequence[HostPlan]], str]] = {
    "json": render_json, "junit": render_junit, "markdown": render_markdown, "html": render_html,
    "text": lambda plans: render_text(plans, color=False),
}
