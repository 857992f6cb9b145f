//! DMXP segment backend (shm). Work in progress.
