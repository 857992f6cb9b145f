//! DMXP segment backend (memfd). Work in progress.
