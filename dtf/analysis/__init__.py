"""Pure statistics over results: regressions, comparisons, anomalies, flaky tests, trends."""
