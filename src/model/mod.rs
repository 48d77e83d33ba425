//! Diffusion signal models (DTI, DKI) and the chunked leave-one-volume-out engine.
