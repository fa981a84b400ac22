//! The configured users, indexed by name, DN and device id.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Value, json};
use subtle::ConstantTimeEq;

use crate::agent::AgentState;
use crate::config::{FEATURE_RECORDING, FEATURE_VOICE, UserConfig};

/// One user as the service sees it.
#[derive(Debug)]
pub(crate) struct User {
    pub name: Arc<str>,
    password: String,
    pub device_id: String,
    pub dn: String,
    pub features: Vec<String>,
    pub voice: bool,
    pub recording: bool,
}

impl User {
    fn new(c: &UserConfig) -> User {
        User {
            name: Arc::from(c.name.as_str()),
            password: c.password.clone(),
            device_id: c.device_id.clone(),
            dn: c.dn.clone(),
            features: c.features.clone(),
            voice: c.has_feature(FEATURE_VOICE),
            recording: c.has_feature(FEATURE_RECORDING),
        }
    }

    /// Whether `id` names this user's device (UUIDs compare case-insensitively).
    pub fn owns_device(&self, id: &str) -> bool {
        self.device_id.eq_ignore_ascii_case(id)
    }

    /// The device object of `GET /api/v2/me/devices`, in agent state `agent`.
    pub fn device_json(&self, base: &str, agent: &AgentState) -> Value {
        let mut caps = Vec::new();
        if self.voice {
            caps.push("Dial");
            if self.recording {
                caps.push("StopCallRecording");
            }
            caps.push(if agent.do_not_disturb {
                "DoNotDisturbOff"
            } else {
                "DoNotDisturbOn"
            });
        }
        json!({
            "id": self.device_id,
            "deviceState": "Active",
            "userState": agent.user_state_json(),
            "phoneNumber": self.dn,
            "e164Number": "",
            "telephonyNetwork": "Private",
            "doNotDisturb": agent.dnd_json(),
            "capabilities": caps,
            "uri": format!("{base}/api/v2/devices/{}", self.device_id),
            "path": format!("/devices/{}", self.device_id),
        })
    }

    /// The user object of `GET /api/v2/me`.
    pub fn user_json(&self, base: &str, agent: &AgentState) -> Value {
        json!({
            "id": &*self.name,
            "userName": &*self.name,
            "roles": ["ROLE_AGENT"],
            "enabledFeatures": self.features,
            "devices": [self.device_json(base, agent)],
            "uri": format!("{base}/api/v2/users/{}", self.name),
            "path": format!("/users/{}", self.name),
        })
    }
}

/// Users by name, DN and device id.
#[derive(Debug, Default)]
pub(crate) struct Directory {
    by_name: HashMap<String, Arc<User>>,
    by_dn: HashMap<String, Arc<User>>,
}

impl Directory {
    pub fn new(users: &[UserConfig]) -> Directory {
        let mut d = Directory::default();
        for c in users {
            let u = Arc::new(User::new(c));
            d.by_name.insert(c.name.clone(), u.clone());
            d.by_dn.insert(c.dn.clone(), u);
        }
        d
    }

    pub fn by_name(&self, name: &str) -> Option<&Arc<User>> {
        self.by_name.get(name)
    }

    pub fn by_dn(&self, dn: &str) -> Option<&Arc<User>> {
        self.by_dn.get(dn)
    }

    /// The user with these credentials. The password comparison is constant-time in the
    /// bytes compared (`subtle`; only the lengths show), and an unknown user costs a comparison
    /// too, so timing tells little about which part was wrong.
    pub fn check_password(&self, name: &str, password: &str) -> Option<&Arc<User>> {
        match self.by_name.get(name) {
            Some(u) => bool::from(u.password.as_bytes().ct_eq(password.as_bytes())).then_some(u),
            None => {
                let _ = password.as_bytes().ct_eq(password.as_bytes());
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_must_match_exactly() {
        let d = Directory::new(&crate::VoiceConfig::default().users);
        assert_eq!(
            &*d.check_password("agent1", "password").unwrap().name,
            "agent1"
        );
        for (u, p) in [
            ("agent1", "passwore"),
            ("agent1", "passwor"),
            ("agent1", "password "),
            ("agent1", ""),
            ("nobody", "password"),
        ] {
            assert!(d.check_password(u, p).is_none(), "{u}:{p}");
        }
    }
}
