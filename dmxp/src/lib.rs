//! DMXP std facade. Work in progress.
