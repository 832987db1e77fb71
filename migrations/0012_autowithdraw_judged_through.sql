-- The end of the last analytics window judged for each prefix (SPEC §7.3): a window that does
-- not start exactly there (the prefix was out of the config, or time went unjudged) breaks
-- its calm stretch, so a prefix removed from the config and added back never keeps an old
-- calm_since across the time nobody judged it.
ALTER TABLE autowithdraw_prefixes ADD COLUMN judged_through DATETIME;
