#!/bin/sh
# Runs the reference's own tests (not part of CI: CI needs no Python). Usage: tools/reference/run_tests.sh
cd "$(dirname "$0")" && exec nice -n 19 python -m pytest -q tests "$@"
