//! The web page at `/`: one HTML file compiled into the binary (no build step, no CDN).

pub const PAGE: &str = include_str!("../../assets/server/index.html");
