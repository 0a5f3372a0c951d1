//! The Segment-spec event that crosses every stage after mapping.
//! (Placeholder: the mapping work defines it fully.)
