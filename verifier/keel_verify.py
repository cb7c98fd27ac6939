"""Verify Keel ledger exports without Keel: python keel_verify.py EXPORT.jsonl --keys KEYS.json

Needs only Python, rfc8785 and cryptography; see docs/auditors.md. Exit 0: every ledger
verified; 1: one failed (event number and reason printed); 2: unreadable input."""

# ruff: noqa: E731, SIM115
import argparse, base64, hashlib, json, sys  # noqa: E401, I001

import rfc8785
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

SCHEME, SIGNED, CONTINUED = "keel-ledger/2", "ChainHeadSigned", "LedgerContinued"
b64 = lambda text: base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
Failed = type("Failed", (Exception,), {})  # (event number, reason); not assert: python -O
event_hash = lambda e: hashlib.sha256(rfc8785.dumps({k: v for k, v in e.items() if k != "hash"}))


def need(ok, where, why):
    """Raise Failed(where, why) unless ok."""
    if not ok:
        raise Failed(where, why)


def verify(events, keys, closed):
    """Check one workflow's chain; raise Failed at the first failure, else return a summary."""
    prev, hashes, kinds, run, covered, last = "0" * 64, {}, {}, (None, None), 0, "no signature"
    for n, e in enumerate(events, start=1):
        kind, c, check = e.get("type"), e.get("covers_seq"), lambda ok, why, n=n: need(ok, n, why)
        check(e.get("seq") == n, f"sequence number {e.get('seq')!r} where {n} was expected")
        check(n > 1 or e.get("scheme") == SCHEME, f"not {SCHEME} (an unsigned legacy ledger?)")
        check(e.get("scheme", SCHEME) == SCHEME, "the hash scheme changes mid-chain")
        check(n == 1 or "scheme" not in e or kind == CONTINUED, "a scheme named mid-run")
        check(e.get("prev_hash") == prev, "prev_hash does not match the previous event's hash")
        check(e.get("hash") == event_hash(e).hexdigest(), "hash does not match the event")
        if kind == "WorkflowStarted":
            check(run[0] in (None, e.get("workflow_id")), "a run of another workflow")
            run = (e.get("workflow_id"), e.get("run_id"))
        if kind == CONTINUED:
            check(e.get("previous_head") == prev, "the link names another previous head")
            check("scheme" in e, "a continued run names no hash scheme")
            check(n == 1 or (kinds[n - 1] == SIGNED and covered == n - 2), "a run ended unsigned")
            check(n == 1 or e.get("previous_run_id") == run[1], "the link names another run")
            run = (run[0], None)
        if kind == SIGNED:
            check(type(c) is int and hashes.get(c) == e.get("covers_hash"), "not a head here")
            check((e.get("workflow_id"), e.get("run_id")) == run, "it names another run")
            check(e.get("algorithm") == "ed25519", "not an Ed25519 signature")
            check(e.get("key_id") in keys, f"signed by {e.get('key_id')}, an untrusted key")
            message = {key: e[key] for key in ("workflow_id", "run_id", "reason")}
            message.update(scheme=SCHEME, seq=c, head=e["covers_hash"])
            signed = rfc8785.dumps({"purpose": "keel/ledger-head/1", "message": message})
            try:
                keys[e["key_id"]].verify(b64(e["signature"]), signed)
            except Exception:
                check(False, f"the signature by {e['key_id']} does not match the signed content")
            covered, last = max(covered, c), f"signed by {e['key_id']} at #{max(covered, c)}"
        hashes[n], kinds[n], prev = e["hash"], kind, e["hash"]
    unsigned = [seq for seq, kind in kinds.items() if seq > covered and kind != SIGNED]
    if closed or "WorkflowCompleted" in kinds.values():  # a closed run ends with its completion
        need(not unsigned, unsigned and unsigned[0], f"{len(unsigned)} events unsigned at the end")
        ends = events[-1].get("reason"), events[-1].get("covers_seq")
        need(ends == ("completion", len(events) - 1), len(events), "no completion signature")
    return f"{len(events)} events, {last}, {len(unsigned)} unsigned events"


def main():
    """Verify every workflow's ledger in the export; exit 0 only if all verify."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("export")
    parser.add_argument("--keys", required=True, help="the trusted public keys (keyring JSON)")
    parser.add_argument("--allow-open", action="store_true", help="RUNNING runs may end unsigned")
    args, keys, runs, failed = parser.parse_args(), {}, {}, False
    unique = lambda kv: need(len(dict(kv)) == len(kv), "?", "a repeated key") or dict(kv)
    try:  # keys: {"keys": [{"key_id": "ed25519:<16 hex>", "public_key": "<base64url>"}]}
        for entry in json.load(open(args.keys))["keys"]:
            kid = "ed25519:" + hashlib.sha256(b64(entry["public_key"])).hexdigest()[:16]
            need(entry.get("key_id", kid) == kid, "keys", f"{entry['key_id']} is not its key's id")
            keys[kid] = Ed25519PublicKey.from_public_bytes(b64(entry["public_key"]))
        for line in filter(str.strip, open(args.export, encoding="utf-8")):
            r = json.loads(line, object_pairs_hook=unique)
            runs.setdefault(r["workflow_id"], {}).setdefault(r["run_id"], []).append(r)
    except (OSError, ValueError, KeyError, TypeError, Failed) as err:
        print(f"keel_verify: unreadable input: {err!r}", file=sys.stderr)
        sys.exit(2)
    for wid, by_run in runs.items():  # runs in chain order: by their first event's number
        ordered = sorted(by_run.values(), key=lambda rs: str(rs[0]["event"].get("seq")).zfill(20))
        closed = not (args.allow_open and ordered[-1][-1].get("status") == "RUNNING")
        chain = [record["event"] for rs in ordered for record in rs]
        try:
            print(f"{wid!r}: verified ({verify(chain, keys, closed)})")
        except Exception as err:  # a malformed event fails its ledger, with the reason
            where, why = err.args if isinstance(err, Failed) else ("?", repr(err))
            print(f"{wid!r}: FAILED at event #{where}: {why!s}".encode("unicode_escape").decode())
            failed = True
    sys.exit(1 if failed or not runs else 0)


if __name__ == "__main__":
    main()
