#!/usr/bin/env python3
"""Parse an exposition with the real prometheus_client parsers, for tests/openmetrics.rs.

Usage: check_openmetrics.py OPENMETRICS_FILE [TEXT_FILE]

The first file goes through prometheus_client's strict OpenMetrics 1.0 parser
(``prometheus_client.openmetrics.parser.text_string_to_metric_families``), which
rejects a missing ``# EOF``, counter samples without ``_total``, bad escapes,
misplaced or duplicate metadata, interleaved families and more. The optional second
file goes through its classic text-format parser. On success prints one JSON object:

  {"families": [[name, type], ...],
   "openmetrics": [[sample_name, {label: value}, "value"], ...],
   "text": [...same for the text file, if given...]}

values as Python's repr of the float ("1.0", "inf", "nan"). On a parse error prints
the parser's message on stderr and exits 1. Files are read without newline
translation: a raw carriage return inside a label value is valid and must reach the
parser as it is.
"""

import json
import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_om
from prometheus_client.parser import text_string_to_metric_families as parse_text


def samples(families):
    return [[s.name, dict(s.labels), repr(float(s.value))] for f in families for s in f.samples]


def main() -> int:
    if len(sys.argv) not in (2, 3):
        print(__doc__, file=sys.stderr)
        return 2
    with open(sys.argv[1], encoding="utf-8", newline="") as f:
        om_text = f.read()
    try:
        om = list(parse_om(om_text))
    except Exception as e:  # the parser raises ValueError and friends
        print(f"OpenMetrics parser: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    out = {"families": [[f.name, f.type] for f in om], "openmetrics": samples(om)}
    if len(sys.argv) == 3:
        with open(sys.argv[2], encoding="utf-8", newline="") as f:
            out["text"] = samples(parse_text(f.read()))
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
