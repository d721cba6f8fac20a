//! Placeholder; see DESIGN §2.
