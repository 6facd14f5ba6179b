"""Add the real `firewall-offline-cmd --check-config` answer to each recorded firewalld case: the case's own
recorded /etc/firewalld files are written into a fresh test host and the check is run there."""
import json
import tempfile
from pathlib import Path

from tests.testhost import TestHost

for case in sorted(Path("tests/cases/firewalld").iterdir()):
    doc = json.loads((case / "reads.json").read_text())
    if any(item["read"] == {"command": ["firewall-offline-cmd", "--check-config"]} for item in doc["answers"]):
        continue
    h = TestHost(Path(tempfile.mkdtemp()))
    try:
        for item in doc["answers"]:
            read, answer = item["read"], item["answer"]
            if read.get("glob", "").startswith("/etc/firewalld/"):
                for path, text in answer["files"].items():
                    h.write(path, text)
            if read.get("file", "").startswith("/etc/firewalld/") and answer is not None:
                h.write(read["file"], answer)
        r = h.run(["firewall-offline-cmd", "--check-config"], check=False)
    finally:
        h.close()
    print(case.name, r.returncode, repr(r.stdout), repr(r.stderr))
    doc["answers"].append({"read": {"command": ["firewall-offline-cmd", "--check-config"]},
                           "answer": {"returncode": r.returncode,
                                      "stdout": r.stdout, "stderr": r.stderr}})
    doc["source"] += ("; the --check-config answer added later (issue 16), run in a fresh test host holding this "
                      "case's recorded /etc/firewalld files")
    (case / "reads.json").write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
