-- A pod whose end reaches the ledger after it was charged past it closes at
-- its real end: a correcting journal line walks the checkpoint back from
-- where charging stopped to the end (to_ts < from_ts) with negative amounts,
-- so every pod's lines still chain from its start to its close and sum to
-- cpu x its life. Forward lines stay as they were.
ALTER TABLE usage_intervals DROP CONSTRAINT usage_intervals_check;
ALTER TABLE usage_intervals ADD CONSTRAINT usage_intervals_direction CHECK (
    CASE WHEN to_ts > from_ts THEN charged_mcs >= 0 AND opportunistic_mcs >= 0
         ELSE to_ts < from_ts AND charged_mcs <= 0 AND opportunistic_mcs <= 0 END
);
