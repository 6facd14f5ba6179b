"""Pull mode with real git and real SSH signatures (ssh-keygen), in test hosts: a signed commit is
applied, everything else is refused with nothing applied, and the record and metrics say so
(metrics read by prometheus_client's own parser)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.sshnet import SSHD_CONFIG, SSHNetwork
from tests.testhost import TestHost

ROOT = Path(__file__).resolve().parent.parent
KERNEL = "[sysctl]\nnet.ipv4.conf.all.log_martians = 1\n"
INVENTORY = '[hosts.web1]\ntarget = "local"\nbaseline = "kernel.toml"\n'


class Repo:
    """A repository of baselines whose commits are signed with SSH keys (gpg.format=ssh)."""

    def __init__(self, path: Path, keys: Path) -> None:
        self.path, self.keys = path, keys
        keys.mkdir(exist_ok=True)
        for name in ("trusted", "stranger"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(keys / name)], check=True)
        public = (keys / "trusted.pub").read_text().split()
        self.allowed = keys / "allowed_signers"
        self.allowed.write_text(f'ops@example.invalid namespaces="git" {public[0]} {public[1]}\n')
        self.git("init", "-q", "-b", "main")

    def git(self, *args: str) -> str:
        env = {**os.environ, "GIT_AUTHOR_NAME": "ops", "GIT_AUTHOR_EMAIL": "ops@example.invalid",
               "GIT_COMMITTER_NAME": "ops", "GIT_COMMITTER_EMAIL": "ops@example.invalid"}
        return subprocess.run(["git", "-C", str(self.path), *args], capture_output=True, text=True, check=True,
                              env=env).stdout.strip()

    def commit(self, files: dict[str, str], signer: str | None = "trusted") -> str:
        for name, text in files.items():
            (self.path / name).write_text(text)
        self.git("add", ".")
        signing = ["-c", "gpg.format=ssh", "-c", f"user.signingkey={self.keys / signer}"] if signer else []
        self.git(*signing, "commit", "-q", *(["-S"] if signer else []), "-m", f"change by {signer}")
        return self.git("rev-parse", "HEAD")


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    (tmp_path / "repo").mkdir()
    return Repo(tmp_path / "repo", tmp_path / "keys")


def _pull(host: TestHost, repo: Repo, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return host.converge("pull", "--repo", str(repo.path), "--inventory", "hosts.toml", "--name", "web1",
                         "--allowed-signers", str(repo.allowed), "--report", "/var/lib/converge/pull/last.json",
                         "--metrics", "/var/lib/node_exporter/converge.prom", *extra)


def _metrics(host: TestHost) -> dict[str, list[tuple[dict[str, str], float]]]:
    text = host.read("/var/lib/node_exporter/converge.prom")
    assert text is not None
    return {family.name: [(sample.labels, sample.value) for sample in family.samples]
            for family in text_string_to_metric_families(text)}


def _result(metrics: dict[str, list[tuple[dict[str, str], float]]]) -> str:
    return next(labels["result"] for labels, value in metrics["converge_last_run_result"] if value == 1)


def test_a_signed_commit_is_applied_then_in_sync(test_host: TestHost, repo: Repo, tmp_path: Path) -> None:
    commit = repo.commit({"kernel.toml": KERNEL, "hosts.toml": INVENTORY})
    first = _pull(test_host, repo, tmp_path, "--apply")
    assert first.returncode == 0, first.stdout + first.stderr
    assert test_host.sysctl("net.ipv4.conf.all.log_martians") == "1"
    metrics = _metrics(test_host)
    assert metrics["converge_converged"] == [({}, 1.0)]
    assert _result(metrics) == "converged"
    [(info, _)] = metrics["converge_last_run_info"]
    assert info["commit"] == commit and info["signer"].startswith("ops@example.invalid")
    record = json.loads(test_host.read("/var/lib/converge/pull/last.json") or "{}")
    assert record["pull"]["commit"] == commit and record["hosts"][0]["converged"] is True

    second = _pull(test_host, repo, tmp_path, "--apply")
    assert second.returncode == 0, second.stdout + second.stderr
    assert _result(_metrics(test_host)) == "in-sync"
    assert test_host.read("/var/lib/converge/pull/last.json.1") is not None  # the previous record kept


@pytest.mark.parametrize("case", ["unsigned", "stranger", "rewound", "missing host"])
def test_refused_commits_apply_nothing(case: str, test_host: TestHost, repo: Repo, tmp_path: Path) -> None:
    good = repo.commit({"kernel.toml": "[sysctl]\nnet.ipv4.conf.all.accept_redirects = 0\n", "hosts.toml": INVENTORY})
    assert _pull(test_host, repo, tmp_path, "--apply").returncode == 0
    if case == "unsigned":
        repo.commit({"kernel.toml": KERNEL}, signer=None)
    elif case == "stranger":
        repo.commit({"kernel.toml": KERNEL}, signer="stranger")
    elif case == "rewound":
        later = repo.commit({"kernel.toml": KERNEL.replace("log_martians = 1", "log_martians = 0")})
        assert _pull(test_host, repo, tmp_path, "--apply").returncode == 0
        repo.git("reset", "-q", "--hard", good)  # the ref goes back to an older, still signed, commit
        (repo.path / "kernel.toml").write_text(KERNEL)
        assert later
    else:
        repo.commit({"hosts.toml": '[hosts.db1]\ntarget = "local"\nbaseline = "kernel.toml"\n', "kernel.toml": KERNEL})
    if case == "rewound":
        repo.commit({"kernel.toml": KERNEL}, signer="trusted")  # signed, but not a descendant of `later`
    refused = _pull(test_host, repo, tmp_path, "--apply")
    assert refused.returncode == 1
    assert test_host.sysctl("net.ipv4.conf.all.log_martians") == "0"  # nothing applied
    metrics = _metrics(test_host)
    assert _result(metrics) == "refused"
    assert metrics["converge_converged"] == [({}, 0.0)]
    [(info, _)] = metrics["converge_last_run_info"]
    expected = {"unsigned": "not signed by an allowed signer", "stranger": "not signed by an allowed signer",
                "rewound": "does not descend from", "missing host": "host web1 is not in hosts.toml"}[case]
    assert expected in info["reason"], info["reason"]


def test_a_failing_provider_shows_in_the_metrics(test_host: TestHost, repo: Repo, tmp_path: Path) -> None:
    repo.commit({"kernel.toml": "[sysctl]\nnet.ipv4.ip_local_port_range = \"60000 1024\"\n", "hosts.toml": INVENTORY})  # EINVAL
    failed = _pull(test_host, repo, tmp_path, "--apply")
    assert failed.returncode == 1
    metrics = _metrics(test_host)
    assert metrics["converge_converged"] == [({}, 0.0)]
    assert ({"provider": "sysctl"}, 1.0) in metrics["converge_provider_failed"]


def test_the_unit_files_pass_systemd_analyze(tmp_path: Path) -> None:
    # systemd-analyze checks that ExecStart exists: point it at the converge of this venv.
    executable = Path(sys.executable).parent / "converge"
    assert executable.exists()
    names = ("converge-pull.service", "converge-pull.timer")
    for name in names:
        text = (ROOT / "contrib" / "systemd" / name).read_text()
        (tmp_path / name).write_text(text.replace("/usr/local/bin/converge", str(executable)))
    verified = subprocess.run(["systemd-analyze", "verify", "--man=no", *(str(tmp_path / name) for name in names)],
                              capture_output=True, text=True, check=False)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.stderr.strip() == ""


def test_twenty_hosts_pull_one_repository_over_ssh(network: SSHNetwork, repo: Repo, tmp_path: Path) -> None:
    server = network.add_host("git")
    # A fleet's git server takes many connections at once: sshd's default MaxStartups (10:30:100)
    # drops some of 20 simultaneous unauthenticated ones at random.
    server.write(SSHD_CONFIG, (server.read(SSHD_CONFIG) or "") + "MaxStartups 100\n")
    server.stop_sshd()
    server.start_sshd()
    repo.commit({"kernel.toml": KERNEL, "hosts.toml": "".join(
        f'[hosts.web{index}]\ntarget = "local"\nbaseline = "kernel.toml"\n' for index in range(20))})
    deploy = tmp_path / "deploy"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(deploy)], check=True)
    server.write("/etc/ssh/authorized_keys/root", (server.read("/etc/ssh/authorized_keys/root") or "")
                 + deploy.with_suffix(".pub").read_text())
    hosts = [network.add_host(f"web{index}") for index in range(20)]
    started = time.monotonic()
    pulls = []
    for index, host in enumerate(hosts):
        host.write("/root/.ssh/known_hosts", f"{server.address} {server.host_key}\n")
        argv = host.converge_argv("pull", "--repo", f"ssh://root@{server.address}{repo.path}", "--inventory",
                                  "hosts.toml", "--name", f"web{index}", "--apply", "--allowed-signers", str(repo.allowed),
                                  "--deploy-key", str(deploy), "--report", "/var/lib/converge/pull/last.json")
        pulls.append(subprocess.Popen(["nsenter", "-t", str(host.pid), "-m", "-n", "-u", "--", *argv],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results = [(pull.wait(300), *pull.communicate()) for pull in pulls]
    elapsed = time.monotonic() - started
    assert [code for code, _, _ in results] == [0] * 20, results
    for index, host in enumerate(hosts):
        assert host.sysctl("net.ipv4.conf.all.log_martians") == "1"
        record = json.loads(host.read("/var/lib/converge/pull/last.json") or "{}")
        assert record["hosts"][0]["host"] == f"web{index}"
    print(f"bench: 20 hosts pulled and applied one repository over SSH in {elapsed:.1f} s")
