//! Exchanges and bindings: pure routing tables, replicated on every shard.
