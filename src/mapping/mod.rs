//! Stage 3: verified webhook → Segment events. Pure: no I/O, no panics.
//! (Placeholder: the mapping work defines it fully.)
