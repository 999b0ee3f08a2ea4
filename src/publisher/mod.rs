//! The publisher side: everything that plays an engine rather than watching one.
//! [`FramePublisher`] sends byte-exact FPM frames on the engines' PUB convention;
//! [`sim`] is the one simulated scheduler behind the demo engine ([`demo`]) and the
//! load generator ([`loadgen`]); [`replay`] publishes a `--record` capture again.
//! Nothing here imports the consumer side (source, state, sinks, http): ranks are
//! addressed through the neutral [`crate::address`].

pub mod demo;
pub mod loadgen;
pub mod replay;
pub mod sim;
pub mod socket;

pub use socket::FramePublisher;
