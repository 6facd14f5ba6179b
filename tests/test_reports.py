"""Reports for CI servers and people, read by their real clients: JUnit XML by junitparser, the
HTML report by a real headless Chromium (its DOM and a screenshot), Markdown as text."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import junitparser

from converge.plan import Change, HostPlan, Side, Skipped, summary
from converge.reports import render_html, render_junit, render_markdown
from tests.testhost import TestHost

CHROMIUM = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _fleet(size: int) -> list[HostPlan]:
    """A fleet of every kind of host: in sync, drifting, failed, with a provider skipped."""
    plans = []
    for index in range(size):
        plan = HostPlan(f"web{index:03d}", f"root@198.18.{index // 250}.{index % 250 + 2}",
                        providers=["sysctl", "ufw", "apparmor"], baseline=("ubuntu-web", "ab" * 32))
        if index % 4 == 1:
            plan.changes += [
                Change("sysctl", "sysctl", "kernel.kptr_restrict", "update", 0, 2),
                Change("sysctl", "sysctl", "net.ipv4.tcp_syncookies", "update", 1, 1, ("not persisted",),
                       {"runtime": Side(1, 1), "persisted": Side(None, 1)}),
                Change("ufw", "rule", "allow 22/tcp <script>x</script>", "add", None, {"action": "allow"}),
            ]
        elif index % 4 == 2:
            plan.errors.append("apparmor: apparmor_parser: syntax error in line 3")
        elif index % 4 == 3:
            plan.skipped.append(Skipped("apparmor", "AppArmor is not enabled in this host's kernel"))
        plans.append(plan)
    return plans


def test_junit_counts_equal_the_plans(tmp_path: Path) -> None:
    plans = _fleet(8)
    path = tmp_path / "report.xml"
    path.write_text(render_junit(plans))
    xml = junitparser.JUnitXml.fromfile(str(path))
    suites = list(xml)
    assert [suite.name for suite in suites] == [plan.host for plan in plans]
    for suite, plan in zip(suites, plans, strict=True):
        assert suite.failures == len(plan.changes)
        assert suite.errors == len(plan.errors)
        assert suite.skipped == len(plan.skipped)
        failed = [case.name for case in suite if any(isinstance(r, junitparser.Failure) for r in case.result)]
        assert failed == [change.resource for change in plan.changes]
    assert sum(suite.failures for suite in suites) == sum(summary(plans).values())


def test_markdown_summary_has_the_matrix_and_the_changes() -> None:
    text = render_markdown(_fleet(4))
    assert "| host | sysctl | ufw | apparmor |" in text
    assert "| web001 | drift | drift | in sync |" in text
    assert "| web002 | in sync | in sync | error |" in text
    assert "| web003 | in sync | in sync | skipped |" in text
    assert "| sysctl | `kernel.kptr_restrict` | update | `0` | `2` |" in text


class _Cells(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self._in_matrix = False
        self.scripts = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table" and ("id", "matrix") in attrs:
            self._in_matrix = True
        elif self._in_matrix and tag == "tr":
            self.rows.append([])
        if tag == "script":
            self.scripts += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._in_matrix = False

    def handle_data(self, data: str) -> None:
        if self._in_matrix and self.rows and data.strip():
            self.rows[-1].append(data.strip())


def test_html_report_of_200_hosts_in_a_real_browser(test_host: TestHost, tmp_path: Path) -> None:
    plans = _fleet(200)
    page = tmp_path / "report.html"
    page.write_text(render_html(plans))
    profile = tmp_path / "profile"
    # Inside a test host: no network at all, so the page can only be self-contained.
    dom = test_host.run([*CHROMIUM, f"--user-data-dir={profile}", "--dump-dom", page.as_uri()])
    cells = _Cells()
    cells.feed(dom.stdout)
    assert cells.scripts == 0
    assert cells.rows[0] == ["host", "sysctl", "ufw", "apparmor"]
    assert len(cells.rows) == 201
    assert cells.rows[2] == ["web001", "drift", "drift", "in sync"]
    assert cells.rows[3] == ["web002", "in sync", "in sync", "error"]
    assert cells.rows[4] == ["web003", "in sync", "in sync", "skipped"]
    assert "<script>x</script>" not in dom.stdout.replace("&lt;script&gt;x&lt;/script&gt;", "")
    assert "sha256 " in dom.stdout and "ab" * 32 in dom.stdout
    shot = tmp_path / "report.png"
    test_host.run([*CHROMIUM, f"--user-data-dir={profile}", f"--screenshot={shot}", "--window-size=1200,900", page.as_uri()])
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_format_and_report_options_on_the_cli(test_host: TestHost, tmp_path: Path) -> None:
    baseline = tmp_path / "kernel.toml"
    baseline.write_text("[sysctl]\nnet.ipv4.conf.all.accept_redirects = 0\n")
    as_json = test_host.converge("plan", str(baseline), "--format", "json")
    assert as_json.returncode == 2, as_json.stderr
    assert json.loads(as_json.stdout)["summary"]["update"] == 1
    report = tmp_path / "plan.xml"
    with_report = test_host.converge("plan", str(baseline), "--format", "junit", "--report", str(report))
    assert with_report.returncode == 2
    assert "Plan: 0 to add, 1 to change, 0 to remove." in with_report.stdout  # the terminal keeps the text view
    suite = next(iter(junitparser.JUnitXml.fromfile(str(report))))
    assert suite.failures == 1
    both = test_host.converge("plan", str(baseline), "--json", "--format", "html")
    assert both.returncode == 1


