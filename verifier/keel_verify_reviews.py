"""Check Keel reviewer decisions without Keel: python keel_verify_reviews.py EXPORT.jsonl
--reviewer-keys TRUST.json

Each GateDecided, GateApproved, GateReassigned and GateDeferred must carry a reviewer's
Ed25519 signature by a trusted key over what the event records: that decision, on that gate,
in that run, with that comment, delegation, modifications and reassignment. Run it beside
keel_verify.py (which checks the hash chain and the worker's signed heads). Needs only
Python, rfc8785 and cryptography; see docs/auditors.md. Exit 0: every decision holds;
1: one does not (event number and reason printed); 2: unreadable input."""

# ruff: noqa: E731, SIM115
import argparse, base64, json, sys  # noqa: E401, I001
from datetime import datetime

import rfc8785
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

PURPOSE, KINDS = "keel/review-decision/1", ("GateDecided", "GateApproved", "GateReassigned")
KINDS += ("GateDeferred",)
b64 = lambda text: base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
when = lambda text: datetime.fromisoformat(text.replace("Z", "+00:00"))


def problem(e, s, keys, run):
    """What is wrong with decision event ``e`` whose signed content is ``s`` (None: holds)."""
    key = keys.get(e.get("key_id"))
    if not isinstance(s, dict) or not isinstance(e.get("signature"), str):
        return f"not signed ({(e.get('auth') or {}).get('method', 'no signature')})"
    if key is None:
        return f"signed by {e.get('key_id')}, which the trust file does not hold"
    try:
        message = rfc8785.dumps({"purpose": PURPOSE, "message": s})
        Ed25519PublicKey.from_public_bytes(b64(key["public_key"])).verify(
            b64(e["signature"]), message
        )
    except Exception:
        return f"the signature by {e.get('key_id')} does not match what was signed"
    if key.get("not_after") and when(s["issued_at"]) > when(key["not_after"]):
        return f"signed after {e.get('key_id')} was retired"
    if key.get("kind") == "reviewer" and (
        s.get("reviewer") != key.get("subject") or not set(s.get("roles", [])) <= set(key["roles"])
    ):
        return f"{e.get('key_id')} signs for {key.get('subject')!r} and its roles only"
    approving, said = {"approve", "modify"}, s.get("decision")
    allowed = {"GateApproved": approving, "GateReassigned": {"reassign"}, "GateDeferred": {"defer"}}
    allowed["GateDecided"] = {"reject"} if e.get("decision") == "reject" else approving
    checks = [
        (said in allowed[e["type"]], f"records {e.get('decision', e['type'])!r}, signed {said!r}"),
        (s.get("gate") == e.get("gate"), "records another gate than was signed"),
        (s.get("reviewer") == e.get("reviewer"), "records another reviewer than signed"),
        (run in (None, (s.get("workflow_id"), s.get("run_id"))), "signed for another run"),
        (s.get("on_behalf_of") == e.get("on_behalf_of"), "records another delegation"),
        ((s.get("comment") or None) == (e.get("comment") or None), "records another comment"),
    ]
    if e["type"] == "GateApproved" or said == "modify":
        checks.append((s.get("modifications") == e.get("modifications"), "other modifications"))
    if e["type"] == "GateReassigned":
        to = s.get("reassign_to") or {}
        moved = (to.get("reviewers", []), to.get("roles", [])) == (e["to_reviewers"], e["to_roles"])
        checks.append((moved, "records another reassignment than was signed"))
    return next((why for ok, why in checks if not ok), None)


def main():
    """Check every decision of every workflow in the export; exit 0 only if all hold."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("export")
    parser.add_argument("--reviewer-keys", required=True, help="the reviewer trust file (JSON)")
    args, by_workflow, failed = parser.parse_args(), {}, False
    try:  # {"keys": [{"key_id", "public_key", "kind", "subject", "roles", "not_after"}]}
        keys = {k["key_id"]: k for k in json.load(open(args.reviewer_keys))["keys"]}
        for line in filter(str.strip, open(args.export, encoding="utf-8")):
            record = json.loads(line)
            by_workflow.setdefault(record["workflow_id"], []).append(record["event"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        print(f"keel_verify_reviews: unreadable input: {err!r}", file=sys.stderr)
        sys.exit(2)
    for wid, events in by_workflow.items():
        run, held, bad = None, 0, []
        for e in sorted(events, key=lambda e: e.get("seq") if type(e.get("seq")) is int else 0):
            if e.get("type") in ("WorkflowStarted", "LedgerContinued"):  # a new run's ids
                run = (e.get("workflow_id"), e.get("run_id")) if "run_id" in e else None
            if e.get("type") in KINDS:
                try:
                    why = problem(e, e.get("signed"), keys, run)
                except Exception as err:  # a malformed event fails, with the reason
                    why = f"malformed: {err!r}"
                bad += [f"event #{e.get('seq')} ({e['type']}): {why}"] if why else []
                held += not why
        for line in bad or [f"{held} decisions hold"]:
            print(f"{wid!r}: {'FAILED ' if bad else ''}{line}".encode("unicode_escape").decode())
        failed |= bool(bad)
    sys.exit(1 if failed or not by_workflow else 0)


if __name__ == "__main__":
    main()
