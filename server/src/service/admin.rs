//! Researchers' access: admin tokens and sessions, authorization per study, the audit log, and the
//! model registry.

use super::*;

impl AppService {
    /// Who `token` is: the bootstrap owner (compared in constant time) or a live per-person token
    /// (found by its digest, the way API keys are).
    pub async fn principal_for_token(
        &self,
        token: &str,
    ) -> Result<Option<Principal>, BackendError> {
        let token = token.trim();
        if token.is_empty() {
            return Ok(None);
        }
        if self.admin_token_matches(token) {
            return Ok(Some(Principal {
                name: "owner".into(),
                role: AdminRole::Owner,
                token_id: None,
            }));
        }
        if !token.starts_with(crate::store::ADMIN_TOKEN_PREFIX) {
            return Ok(None);
        }
        Ok(self
            .store
            .admin_token_by_digest(&sha256_hex(token))
            .await?
            .map(|row| Principal {
                name: row.name,
                role: row.role,
                token_id: Some(row.id),
            }))
    }

    /// The studies granted to `who`, `None` meaning all of them (the owner; a viewer without
    /// grants).
    pub(crate) async fn granted_studies(
        &self,
        who: &Principal,
    ) -> Result<Option<Vec<String>>, BackendError> {
        match (who.role, who.token_id) {
            (AdminRole::Owner, _) | (_, None) => Ok(None),
            (role, Some(id)) => {
                let slugs = self.store.granted_study_slugs(id).await?;
                Ok(if role == AdminRole::Viewer && slugs.is_empty() {
                    None
                } else {
                    Some(slugs)
                })
            }
        }
    }

    /// Whether `who` may see study `slug`: `NotFound` (with the same text as a missing study) when not.
    pub(crate) async fn check_study_visible(
        &self,
        who: &Principal,
        slug: &str,
    ) -> Result<(), BackendError> {
        match self.granted_studies(who).await? {
            None => Ok(()),
            Some(slugs) if slugs.iter().any(|s| s == slug) => Ok(()),
            Some(_) => Err(BackendError::NotFound(format!(
                "no study with slug {slug:?}"
            ))),
        }
    }

    pub(crate) async fn admin_bearer(&self, token: &str) -> Option<Principal> {
        self.principal_for_token(token).await.ok().flatten()
    }

    pub(crate) async fn admin_login(
        &self,
        token: &str,
    ) -> Result<(String, Principal), BackendError> {
        let Some(principal) = self.principal_for_token(token).await? else {
            // Never the guess itself: only that one failed (the address is in the server log).
            self.audit("-", "login.failed", "admin", "wrong token")
                .await;
            return Err(BackendError::Unauthorized("wrong admin token".into()));
        };
        let limits = self.session_limits();
        let session = self
            .store
            .create_admin_session(
                principal.token_id,
                &sha256_hex(token.trim()),
                limits.absolute.as_millis() as i64,
            )
            .await?;
        self.audit(&principal.name, "login", "admin", principal.role.as_str())
            .await;
        Ok((session, principal))
    }

    pub(crate) async fn admin_session(&self, session_id: &str) -> Option<Principal> {
        use subtle::ConstantTimeEq;
        if session_id.is_empty() || session_id.len() > 128 {
            return None;
        }
        let row = match self.store.admin_session(session_id).await {
            Ok(row) => row?,
            Err(error) => {
                tracing::error!(?error, "reading an admin session");
                return None;
            }
        };
        let now = crate::domain::now_ms();
        let limits = self.session_limits();
        let idle_ms = limits.idle.as_millis() as i64;
        if now >= row.expires_ms || now - row.last_seen_ms >= idle_ms || row.token_revoked {
            let _ = self.store.delete_admin_session(session_id).await;
            return None;
        }
        let principal = match row.token {
            Some(token) => Principal {
                name: token.name,
                role: token.role,
                token_id: Some(token.id),
            },
            // The bootstrap owner's session holds only while the configured token is the one it
            // logged in with.
            None if bool::from(
                row.credential_sha256
                    .as_bytes()
                    .ct_eq(self.admin_token_hash.as_bytes()),
            ) =>
            {
                Principal {
                    name: "owner".into(),
                    role: AdminRole::Owner,
                    token_id: None,
                }
            }
            None => {
                let _ = self.store.delete_admin_session(session_id).await;
                return None;
            }
        };
        // The idle clock is moved at most once a minute (or a tenth of the idle time), so browsing
        // does not turn every page into a write.
        if now - row.last_seen_ms > (idle_ms / 10).min(60_000) {
            if let Err(error) = self.store.touch_admin_session(session_id).await {
                tracing::error!(?error, "touching an admin session");
            }
        }
        Some(principal)
    }

    pub(crate) async fn admin_logout(&self, session_id: &str) -> Result<(), BackendError> {
        let who = self.admin_session(session_id).await;
        if self.store.delete_admin_session(session_id).await? {
            let name = who.map_or_else(|| "-".to_string(), |p| p.name);
            self.audit(&name, "logout", "admin", "").await;
        }
        Ok(())
    }

    pub(crate) async fn authorize(
        &self,
        who: &Principal,
        permission: Permission<'_>,
    ) -> Result<(), BackendError> {
        use AdminRole::*;
        let forbidden = |what: &str| {
            Err(BackendError::Forbidden(format!(
                "{} {:?} may not {what}",
                who.role.as_str(),
                who.name
            )))
        };
        match permission {
            Permission::ReadStudy(slug) => self.check_study_visible(who, slug).await,
            Permission::WriteStudy(slug) => {
                if who.role == Viewer {
                    // A viewer learns nothing about studies it cannot see either.
                    self.check_study_visible(who, slug).await?;
                    return forbidden(&format!("change study {slug:?} (read-only role)"));
                }
                self.check_study_visible(who, slug).await
            }
            Permission::CreateStudy => match who.role {
                Owner | Researcher => Ok(()),
                Viewer => forbidden("create studies"),
            },
            Permission::ReadModels | Permission::UseModels => match who.role {
                Owner | Researcher => Ok(()),
                Viewer => forbidden("use the models"),
            },
            Permission::ManageModels => match who.role {
                Owner => Ok(()),
                _ => forbidden("change the model registry (owner only)"),
            },
            Permission::ManageTokens => match who.role {
                Owner => Ok(()),
                _ => forbidden("manage admin tokens (owner only)"),
            },
            Permission::ReadAudit => match who.role {
                Owner => Ok(()),
                _ => forbidden("read the audit log (owner only)"),
            },
            Permission::Compute => Ok(()),
        }
    }

    pub(crate) async fn audit(&self, who: &str, action: &str, target: &str, detail: &str) {
        if let Err(error) = self.store.record_audit(who, action, target, detail).await {
            tracing::error!(?error, who, action, target, "writing the audit log");
        }
    }

    pub(crate) fn client_address(
        &self,
        headers: &axum::http::HeaderMap,
        peer: Option<std::net::IpAddr>,
    ) -> Option<std::net::IpAddr> {
        self.cookie_policy
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .client_address(headers, peer)
    }

    pub(crate) fn secure_cookies(&self, headers: &axum::http::HeaderMap) -> bool {
        self.cookie_policy
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .secure(headers)
    }

    pub(crate) async fn admin_tokens(
        &self,
        who: &Principal,
    ) -> Result<Vec<AdminTokenView>, BackendError> {
        self.authorize(who, Permission::ManageTokens).await?;
        Ok(self.store.list_admin_tokens().await?)
    }

    pub(crate) async fn audit_log(
        &self,
        who: &Principal,
        limit: i64,
    ) -> Result<Vec<AuditEntry>, BackendError> {
        self.authorize(who, Permission::ReadAudit).await?;
        Ok(self.store.audit_log(limit.clamp(1, 10_000)).await?)
    }

    pub(crate) async fn create_admin_token(
        &self,
        who: &Principal,
        name: &str,
        role: &str,
        studies: &[String],
    ) -> Result<String, BackendError> {
        self.authorize(who, Permission::ManageTokens).await?;
        let role = AdminRole::parse(role).map_err(BackendError::BadRequest)?;
        let token = self.store.create_admin_token(name, role, studies).await?;
        self.audit(
            &who.name,
            "token.create",
            name.trim(),
            &format!("{} {}", role.as_str(), studies.join(",")),
        )
        .await;
        Ok(token)
    }

    /// Replaces the studies granted to the token `name` (owner only).
    pub(crate) async fn set_admin_token_studies(
        &self,
        who: &Principal,
        name: &str,
        studies: &[String],
    ) -> Result<(), BackendError> {
        self.authorize(who, Permission::ManageTokens).await?;
        self.store.set_admin_token_studies(name, studies).await?;
        self.audit(&who.name, "token.studies", name, &studies.join(","))
            .await;
        Ok(())
    }

    pub(crate) async fn revoke_admin_token(
        &self,
        who: &Principal,
        name: &str,
    ) -> Result<(), BackendError> {
        self.authorize(who, Permission::ManageTokens).await?;
        self.store.revoke_admin_token(name).await?;
        self.audit(&who.name, "token.revoke", name, "").await;
        Ok(())
    }

    pub(crate) async fn model_registry(&self) -> RegistryView {
        use moat_llm::registry::Endpoint;
        let Some(arena) = self.arena() else {
            return RegistryView {
                models: Vec::new(),
                file: None,
                text: None,
            };
        };
        let models = arena
            .hub()
            .registry()
            .models
            .iter()
            .map(|spec| {
                let (target, api_key_env) = match &spec.endpoint {
                    Endpoint::Openai(remote) => (
                        format!("{} ({})", remote.base_url, remote.model),
                        remote.api_key_env.clone(),
                    ),
                    Endpoint::Local(local) => (
                        local
                            .path
                            .file_name()
                            .map(|n| n.to_string_lossy().into_owned())
                            .unwrap_or_default(),
                        None,
                    ),
                    Endpoint::BestOfN(best) => (
                        format!(
                            "best of {} from {} by reward model {}",
                            best.n,
                            best.base,
                            best.reward_model
                                .file_name()
                                .map(|n| n.to_string_lossy().into_owned())
                                .unwrap_or_default()
                        ),
                        None,
                    ),
                };
                RegistryModelView {
                    name: spec.name.clone(),
                    provider: spec.provider.clone(),
                    openness: spec.openness.as_str().to_string(),
                    kind: spec.kind().to_string(),
                    target,
                    api_key_set: api_key_env
                        .as_deref()
                        .is_some_and(|var| std::env::var_os(var).is_some()),
                    api_key_env,
                    max_tokens: spec.sampling.max_tokens,
                    temperature: spec.sampling.temperature,
                }
            })
            .collect();
        RegistryView {
            models,
            file: arena.models().file().map(|path| path.display().to_string()),
            text: arena.models().file_text(),
        }
    }

    pub(crate) async fn save_model_registry(&self, text: &str) -> Result<(), BackendError> {
        let arena = self.arena().ok_or_else(|| {
            BackendError::Conflict(
                "this server has no registry file; start it with --models FILE".into(),
            )
        })?;
        arena
            .models()
            .replace(text)
            .await
            .map(|_| ())
            .map_err(BackendError::BadRequest)
    }
}
