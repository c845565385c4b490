//! Where rate-limit cells and budget spend live: in this process ([`LimitState`]'s
//! `budgets` and `rates`, from `slmgate-policies`) or, with `state.redis` configured, in a
//! Redis shared by every instance ([`redis::RedisStore`]).
//!
//! The limits step ([`crate::layers::limits`]) asks the Redis store first when there is one.
//! When Redis does not answer within `state.redis.timeout`, `on_error: open` checks the
//! request against the in-process state instead (which mirrors this instance's own spend, so
//! it is not empty), and `on_error: closed` refuses it with 503.
//!
//! With `cache.exact.shared`, the same store also keeps exact-cache answers
//! ([`RedisStore::cache_get`], [`RedisStore::cache_set`]); a Redis failure there is a cache
//! miss whatever `on_error` says.

pub mod redis;

pub use self::redis::{RedisReservation, RedisStore, SharedAnswer, StateError};
