//! The Switchyard agent. Telemetry, runtime drivers and the controller link arrive with issue #3.
