//! STUB
pub struct RpingFilter;
