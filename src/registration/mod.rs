//! Image registration: transform, interpolator, metric, optimizer and multi-resolution driver.
