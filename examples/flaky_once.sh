#!/bin/sh
# Fails on the first attempt and succeeds on every retry, to show dtf's retries:
# submit it as a command task ("sh examples/flaky_once.sh") with max_retries >= 1.
attempt="${DTF_ATTEMPT:-1}"
if [ "$attempt" = "1" ]; then
    echo "attempt $attempt: failing on purpose (exit 1); a retry will succeed"
    exit 1
fi
echo "attempt $attempt: succeeding (exit 0)"
exit 0
