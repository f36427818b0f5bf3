//! text-classification (spec §4).
