//! Channel hooks and per-channel settings, as CometD's `ServerChannel` offers them.
//!
//! A channel (a concrete name or a wildcard pattern) comes into existence when a session first
//! subscribes to it, or when the server creates it ([`crate::Engine::create_channel`]). When it
//! is created, the initializers run ([`crate::Engine::add_channel_initializer`]) before anything
//! can use it, then [`crate::Listener::channel_added`] is told. It ends when its last subscriber
//! leaves, unless it is [`ChannelSettings::persistent`] (or was created by the server and never
//! subscribed to), and [`crate::Listener::channel_removed`] is told. A publish to a channel
//! nobody subscribes to reaches nobody and creates nothing (CometD would create it and sweep it
//! right after).
//!
//! On a live channel the server can add:
//! - **message listeners**, which see every message published to the channel (or, on a wildcard
//!   pattern, to the channels it matches) and may change its `data` or veto it (the publisher
//!   gets `404::message_deleted`). They run once per message, before it is serialized once for
//!   every subscriber: there is no per-recipient copy to change.
//! - **subscription listeners**, told when a session subscribes to or unsubscribes from it.
//!
//! Settings: `persistent`, `lazy` (its messages do not wake the subscriber's connection; they go
//! with the next non-lazy message or after [`crate::EngineConfig::max_lazy_ms`]), and
//! `broadcast_to_publisher` (overrides the engine's setting for messages published to it).
//!
//! ```
//! use std::sync::Arc;
//! use bayeux_core::{Engine, EngineConfig, Raw};
//!
//! let engine = Engine::new(EngineConfig::default());
//! // Every channel under /stock is lazy.
//! engine.add_channel_initializer(|name, settings| {
//!     if name.as_str().starts_with("/stock/") {
//!         settings.lazy = true;
//!     }
//! });
//! // A persistent channel whose messages are censored before anyone gets them.
//! let chat = engine.create_channel("/chat/lobby", |s| s.persistent = true).unwrap();
//! chat.add_message_listener(|_from, _channel, data: &mut Raw| {
//!     if data.get().contains("badword") {
//!         return false; // veto
//!     }
//!     true
//! });
//! assert!(chat.settings().persistent);
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use dashmap::DashMap;
use parking_lot::RwLock;

use crate::channel::{ChannelId, ChannelPattern};
use serde_json::value::RawValue;

use crate::codec::Raw;
use crate::session::Session;

/// The settings of one channel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChannelSettings {
    /// Kept when its last subscriber leaves.
    pub persistent: bool,
    /// Its messages are lazy: queued without waking the subscriber's connection.
    pub lazy: bool,
    /// Whether a publisher subscribed to it receives its own message; `None` follows
    /// [`crate::EngineConfig::broadcast_to_publisher`].
    pub broadcast_to_publisher: Option<bool>,
}

/// Sets a channel's settings when it is created.
pub type Initializer = Arc<dyn Fn(&ChannelPattern, &mut ChannelSettings) + Send + Sync>;

/// Sees (and may change or veto) messages published to a channel. `from` is the publishing
/// session (none for the server's own publishes). Return false to veto.
pub type MessageListener =
    Arc<dyn Fn(Option<&Arc<Session>>, &ChannelId, &mut Raw) -> bool + Send + Sync>;

/// What a recipient hook decides for one recipient.
#[derive(Debug)]
pub enum Recipient {
    /// It gets the message as published (the shared serialized bytes).
    Same,
    /// It gets this data instead (serialized for it alone).
    Replace(Raw),
    /// It does not get the message.
    Skip,
}

/// Sees the message once per recipient, and may change or withhold that recipient's copy.
///
/// This is the explicit opt-in to per-recipient work: on a channel with such a hook, a message
/// is serialized again for every recipient whose copy is changed, and the hook runs once per
/// recipient (the `recipient_hook` case of the `router_fanout` benchmark measures the cost).
pub type RecipientHook =
    Arc<dyn Fn(&Arc<Session>, &ChannelId, &RawValue) -> Recipient + Send + Sync>;

/// Told when a session subscribes (`true`) to a channel or unsubscribes (`false`) from it.
/// Runs while that session's subscriptions are locked: it must not subscribe or unsubscribe
/// that session.
pub type SubscriptionListener = Arc<dyn Fn(&Arc<Session>, &ChannelPattern, bool) + Send + Sync>;

/// One live channel.
pub(crate) struct ChannelState {
    name: ChannelPattern,
    settings: RwLock<ChannelSettings>,
    // Plain vectors: an empty one allocates nothing, and most channels have no listener.
    message_listeners: RwLock<Vec<MessageListener>>,
    subscription_listeners: RwLock<Vec<SubscriptionListener>>,
    recipient_hooks: RwLock<Vec<RecipientHook>>,
    /// Created by the server and never subscribed: not removed by unsubscriptions.
    pinned: AtomicBool,
}

/// A live channel, to configure it and add listeners. Holding one does not keep the channel
/// alive: listeners added after it ended have no effect.
#[derive(Clone)]
pub struct ChannelHandle {
    state: Arc<ChannelState>,
    channels: Arc<Channels>,
}

impl std::fmt::Debug for ChannelHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelHandle")
            .field("name", &self.state.name.as_str())
            .field("settings", &*self.state.settings.read())
            .finish()
    }
}

impl ChannelHandle {
    /// The channel's name.
    pub fn name(&self) -> &ChannelPattern {
        &self.state.name
    }

    /// Its settings now.
    pub fn settings(&self) -> ChannelSettings {
        self.state.settings.read().clone()
    }

    /// Changes its settings.
    pub fn configure(&self, f: impl FnOnce(&mut ChannelSettings)) {
        let mut s = self.state.settings.write();
        f(&mut s);
    }

    /// Adds a message listener.
    pub fn add_message_listener(
        &self,
        listener: impl Fn(Option<&Arc<Session>>, &ChannelId, &mut Raw) -> bool + Send + Sync + 'static,
    ) {
        self.state
            .message_listeners
            .write()
            .push(Arc::new(listener));
        self.channels
            .message_listeners
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Adds a recipient hook: the opt-in to per-recipient copies (see [`RecipientHook`]).
    /// On a wildcard pattern it applies to the channels the pattern matches.
    pub fn add_recipient_hook(
        &self,
        hook: impl Fn(&Arc<Session>, &ChannelId, &RawValue) -> Recipient + Send + Sync + 'static,
    ) {
        self.state.recipient_hooks.write().push(Arc::new(hook));
        self.channels
            .recipient_hooks
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Adds a subscription listener.
    pub fn add_subscription_listener(
        &self,
        listener: impl Fn(&Arc<Session>, &ChannelPattern, bool) + Send + Sync + 'static,
    ) {
        self.state
            .subscription_listeners
            .write()
            .push(Arc::new(listener));
    }
}

/// What an unsubscription did to the channel table.
pub(crate) enum Change {
    None,
    Removed(ChannelPattern),
}

/// The live channels, their settings and listeners.
#[derive(Default)]
pub(crate) struct Channels {
    table: DashMap<Arc<str>, Arc<ChannelState>>,
    initializers: RwLock<Arc<Vec<Initializer>>>,
    /// Message listeners added so far (on any channel): publishing looks for them only when
    /// there are some.
    message_listeners: AtomicUsize,
    /// Recipient hooks added so far, likewise.
    recipient_hooks: AtomicUsize,
}

impl Channels {
    pub(crate) fn add_initializer(&self, i: Initializer) {
        let mut w = self.initializers.write();
        let mut v = (**w).clone();
        v.push(i);
        *w = Arc::new(v);
    }

    pub(crate) fn len(&self) -> usize {
        self.table.len()
    }

    pub(crate) fn handle(self: &Arc<Self>, name: &str) -> Option<ChannelHandle> {
        self.table.get(name).map(|s| ChannelHandle {
            state: s.clone(),
            channels: self.clone(),
        })
    }

    /// The channel `name`, created (initializers run) when absent. `pin` marks a channel the
    /// server created. Returns the handle and whether it was created.
    pub(crate) fn ensure(
        self: &Arc<Self>,
        name: &ChannelPattern,
        pin: bool,
        extra: impl FnOnce(&mut ChannelSettings),
    ) -> (ChannelHandle, bool) {
        if let Some(s) = self.table.get(name.as_str()) {
            if pin {
                s.pinned.store(true, Ordering::Relaxed);
            }
            return (
                ChannelHandle {
                    state: s.clone(),
                    channels: self.clone(),
                },
                false,
            );
        }
        // Settings are made before the channel is visible: nothing sees it half-configured.
        let mut settings = ChannelSettings::default();
        for i in self.initializers.read().iter() {
            i(name, &mut settings);
        }
        extra(&mut settings);
        let fresh = Arc::new(ChannelState {
            name: name.clone(),
            settings: RwLock::new(settings),
            message_listeners: RwLock::new(Vec::new()),
            subscription_listeners: RwLock::new(Vec::new()),
            recipient_hooks: RwLock::new(Vec::new()),
            pinned: AtomicBool::new(pin),
        });
        let mut created = false;
        let state = self
            .table
            .entry(name.shared_name().clone())
            .or_insert_with(|| {
                created = true;
                fresh
            })
            .clone();
        (
            ChannelHandle {
                state,
                channels: self.clone(),
            },
            created,
        )
    }

    /// The router's last subscriber of `name` left: the channel ends unless it is persistent
    /// or pinned.
    pub(crate) fn released(&self, name: &ChannelPattern) -> Change {
        let removed = self.table.remove_if(name.as_str(), |_, s| {
            !s.settings.read().persistent && !s.pinned.load(Ordering::Relaxed)
        });
        match removed {
            Some((_, s)) => {
                self.forget_hooks(&s);
                Change::Removed(name.clone())
            }
            None => Change::None,
        }
    }

    /// Removes a channel whatever its settings (it keeps its subscribers in the router; a
    /// later subscription creates it again).
    pub(crate) fn remove(&self, name: &str) -> Option<ChannelPattern> {
        self.table.remove(name).map(|(_, s)| {
            self.forget_hooks(&s);
            s.name.clone()
        })
    }

    /// The first subscriber of `name` arrived: the channel is no longer only pinned.
    pub(crate) fn unpin(&self, name: &str) {
        if let Some(s) = self.table.get(name) {
            s.pinned.store(false, Ordering::Relaxed);
        }
    }

    /// The settings of concrete channel `channel`, when it is live.
    pub(crate) fn settings(&self, channel: &ChannelId) -> Option<ChannelSettings> {
        // One shard lookup (`is_empty` first would lock every shard).
        self.table
            .get(channel.as_str())
            .map(|s| s.settings.read().clone())
    }

    /// The subscription listeners of `name`.
    pub(crate) fn subscription_listeners(&self, name: &str) -> Option<Vec<SubscriptionListener>> {
        self.table
            .get(name)
            .map(|s| s.subscription_listeners.read().clone())
            .filter(|v| !v.is_empty())
    }

    fn forget_hooks(&self, s: &ChannelState) {
        let n = s.message_listeners.read().len();
        self.message_listeners.fetch_sub(n, Ordering::Relaxed);
        let n = s.recipient_hooks.read().len();
        self.recipient_hooks.fetch_sub(n, Ordering::Relaxed);
    }

    /// The recipient hooks of `channel` and of the live wildcard patterns that match it. Empty
    /// (and no lookups) when no hook exists anywhere.
    pub(crate) fn recipient_hooks(&self, channel: &ChannelId) -> Vec<RecipientHook> {
        if self.recipient_hooks.load(Ordering::Relaxed) == 0 {
            return Vec::new();
        }
        let mut names: Vec<String> = channel.wildcard_ancestors().collect();
        names.reverse();
        names.push(channel.as_str().to_owned());
        names
            .iter()
            .filter_map(|n| self.table.get(n.as_str()))
            .flat_map(|s| s.recipient_hooks.read().iter().cloned().collect::<Vec<_>>())
            .collect()
    }

    /// The message listeners of `channel` and of the live wildcard patterns that match it,
    /// patterns first (most general first), as CometD notifies them. Empty (and no lookups)
    /// when no message listener exists anywhere.
    pub(crate) fn message_listeners(&self, channel: &ChannelId) -> Vec<MessageListener> {
        if self.message_listeners.load(Ordering::Relaxed) == 0 {
            return Vec::new();
        }
        let mut names: Vec<String> = channel.wildcard_ancestors().collect();
        names.reverse();
        names.push(channel.as_str().to_owned());
        names
            .iter()
            .filter_map(|n| self.table.get(n.as_str()))
            .flat_map(|s| {
                s.message_listeners
                    .read()
                    .iter()
                    .cloned()
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// The live channels after `after` (by name), at most `limit`, with their settings; and
    /// whether more remain.
    pub(crate) fn page(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> (Vec<(ChannelPattern, ChannelSettings)>, bool) {
        let after = after.map(str::to_owned);
        crate::introspect::smallest(
            self.table
                .iter()
                .map(|e| (e.value().name.clone(), e.value().settings.read().clone())),
            |(n, _)| n.as_str().to_owned(),
            after.as_ref(),
            limit,
        )
    }
}
