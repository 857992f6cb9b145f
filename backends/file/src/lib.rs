//! DMXP segment backend (file). Work in progress.
