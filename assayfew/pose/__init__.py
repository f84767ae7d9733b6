"""The pose benchmark: few-shot object pose (azimuth) regression, non-mutually-exclusive tasks."""
