//! `mt-network-analytics` (SPEC §8). Filled by the network-analytics issue; no binary ships until then.
