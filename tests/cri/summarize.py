#!/usr/bin/env python3
"""Summarize a ginkgo JSON report (critest --ginkgo.json-report): the counts, then every spec that ran by
state with its name (failed and skipped ones with their messages and where they failed).

Usage: summarize.py REPORT.json
"""
import collections
import json
import sys


def spec_name(s):
    return (" ".join(s.get("ContainerHierarchyTexts") or []) + " " + s.get("LeafNodeText", "")).strip()


def main():
    rep = json.load(open(sys.argv[1]))
    for suite in rep:
        specs = [s for s in suite.get("SpecReports", []) if s.get("LeafNodeType") == "It"]
        filtered = [s for s in specs if s["State"] == "skipped" and not (s.get("Failure") or {}).get("Message")]
        ran = [s for s in specs if s not in filtered]
        c = collections.Counter(s["State"] for s in ran)
        print("suite: %s" % suite.get("SuiteDescription"))
        print("passed %d, failed %d, skipped by the specs %d (%d specs run of %d; %d filtered out by focus/skip)"
              % (c["passed"], c["failed"] + c["panicked"] + c["timedout"] + c["interrupted"] + c["aborted"],
                 c["skipped"], len(ran), len(specs), len(filtered)))
        for state in ("failed", "panicked", "timedout", "interrupted", "aborted", "skipped", "passed"):
            sel = [s for s in ran if s["State"] == state]
            if not sel:
                continue
            print("\n== %s (%d)" % (state, len(sel)))
            for s in sorted(sel, key=spec_name):
                print("- %s" % spec_name(s))
                if state == "passed":
                    continue
                f = s.get("Failure") or {}
                msg = (f.get("Message") or "").strip().replace("\n", " | ")
                loc = f.get("Location", {})
                print("    %s\n    at %s:%s" % (msg[:600], loc.get("FileName", "").split("/")[-1],
                                                loc.get("LineNumber", "")))


if __name__ == "__main__":
    main()
