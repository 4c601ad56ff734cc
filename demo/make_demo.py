"""Builds demo/oasst-demo.jsonl (Moat's import format) from OpenAssistant oasst1's en_100_tree.jsonl.

Each of the first 24 trees whose first prompt has at least three ranked assistant replies becomes one
prompt; its replies ranked 1st, 2nd and 3rd by OpenAssistant's volunteers become the responses of three
pseudo-models named after the rank. Run from the repository root:
    python3 demo/make_demo.py testdata/oasst/en_100_tree.jsonl > demo/oasst-demo.jsonl
"""
import json
import sys

out = [json.dumps({"models": [
    {"name": f"oasst-rank-{r}", "provider": "OpenAssistant volunteers", "openness": "open"}
    for r in (1, 2, 3)
]})]
for line in open(sys.argv[1], encoding="utf-8"):
    tree = json.loads(line)
    root = tree["prompt"]
    ranked = sorted(
        (r for r in root.get("replies", []) if r.get("rank") is not None and not r.get("deleted")),
        key=lambda r: r["rank"],
    )
    if len(ranked) < 3:
        continue
    out.append(json.dumps({
        "id": root["message_id"],
        "prompt": root["text"],
        "category": "oasst",
        "responses": {f"oasst-rank-{i + 1}": r["text"] for i, r in enumerate(ranked[:3])},
    }, ensure_ascii=False))
    if len(out) > 24:
        break
print("\n".join(out))
