//! Long-lived containers: start detached, inspect, follow the Engine event stream.
