"""A/B experiments: two versions of one model on a stable hash split of the targets, judged on one
primary metric with per-arm confidence intervals, ended by promoting the winner to every device in one
action. `stats` (pure) compares the arms, `records` holds the experiment, `service` runs it."""
