//! `driftwatch replay --report`: a self-contained HTML timeline per model.
