//! `driftwatch evaluate`: detectors over seeded synthetic streams.
