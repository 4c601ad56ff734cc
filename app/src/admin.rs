//! The researcher's pages: log in with the admin token, create studies, import data, open and close
//! them, watch progress and results, download exports.

use leptos::prelude::*;
use leptos_router::hooks::{use_params_map, use_query_map};

use crate::api::*;
use crate::settings::{field_errors, names_a_setting, Group, Kind, Setting, SETTINGS};
use crate::wire::*;
use crate::{error_text, utc_time};

#[component]
pub fn AdminHome() -> impl IntoView {
    let login = ServerAction::<AdminLogin>::new();
    // The page's data is fetched again after a login or a logout (with JavaScript on, the
    // redirect to /admin stays on this page).
    let logout = ServerAction::<AdminLogout>::new();
    let create = ServerAction::<CreateStudy>::new();
    let studies = Resource::new(
        move || {
            (
                login.version().get(),
                logout.version().get(),
                create.version().get(),
            )
        },
        |_| admin_studies(),
    );
    let save_models_action = ServerAction::<SaveModels>::new();
    let models = Resource::new(
        move || {
            (
                login.version().get(),
                logout.version().get(),
                save_models_action.version().get(),
            )
        },
        |_| admin_models(),
    );
    view! {
        <h1>"Moat admin"</h1>
        <AdminBar refresh=login logout=logout/>
        <Suspense fallback=|| view! { <p>"Loading…"</p> }>
            {move || Suspend::new(async move {
                match studies.await {
                    Err(error) => view! { <p class="error">{error_text(&error)}</p> }.into_any(),
                    Ok(None) => view! {
                        <ActionForm action=login attr:class="login">
                            <label>"Admin token " <input type="password" name="token" required=true/></label>
                            <button type="submit" id="login">"Log in"</button>
                        </ActionForm>
                    }.into_any(),
                    Ok(Some(studies)) => view! { <StudyList studies=studies/> <CreateStudyForm create=create/> }.into_any(),
                }
            })}
        </Suspense>
        <AdminTokens login=login logout=logout/>
        <AuditLog login=login logout=logout/>
        <Suspense fallback=|| ()>
            {move || Suspend::new(async move {
                models.await.ok().flatten().map(|registry| view! {
                    <ModelRegistry models=registry.models.clone()/>
                    <RegistryEditor registry=registry action=save_models_action/>
                })
            })}
        </Suspense>
        {move || login.value().get().and_then(|r| r.err()).map(|e| view! { <p class="error">{error_text(&e)}</p> })}
        {move || create.value().get().and_then(|r| r.err()).map(|e| view! { <p class="error" id="create-error">{form_error_summary(&error_text(&e))}</p> })}
    }
}

/// Who is logged in, with the log-out button (a plain form post without JavaScript). The session
/// ends on the server, not only in this browser.
#[component]
fn AdminBar(refresh: ServerAction<AdminLogin>, logout: ServerAction<AdminLogout>) -> impl IntoView {
    let who = Resource::new(
        move || (refresh.version().get(), logout.version().get()),
        |_| admin_whoami(),
    );
    view! {
        <Suspense fallback=|| ()>
            {move || Suspend::new(async move {
                who.await.ok().flatten().map(|principal| view! {
                    <div class="admin-bar">
                        <span id="whoami">"Logged in as " {principal.name} " (" {principal.role.as_str()} ")"</span>
                        <ActionForm action=logout attr:class="logout">
                            <button type="submit" id="logout">"Log out"</button>
                        </ActionForm>
                    </div>
                })
            })}
        </Suspense>
    }
}

/// The owner's section: per-person tokens with their roles, a form to create one (the token is
/// shown once, here) and a revoke button per token.
#[component]
fn AdminTokens(
    login: ServerAction<AdminLogin>,
    logout: ServerAction<AdminLogout>,
) -> impl IntoView {
    let create = ServerAction::<CreateAdminToken>::new();
    let revoke = ServerAction::<RevokeAdminToken>::new();
    let grant = ServerAction::<SetAdminTokenStudies>::new();
    let tokens = Resource::new(
        move || {
            (
                login.version().get(),
                logout.version().get(),
                create.version().get(),
                revoke.version().get(),
                grant.version().get(),
            )
        },
        |_| admin_tokens(),
    );
    view! {
        <Suspense fallback=|| ()>
            {move || Suspend::new(async move {
                tokens.await.ok().flatten().map(|tokens| {
                    let rows = tokens
                        .into_iter()
                        .map(|token| {
                            let name = token.name.clone();
                            let studies = token.studies.join(", ");
                            // An owner's token sees every study; a revoked one is done.
                            let grantable = !token.revoked && token.role != AdminRole::Owner;
                            let grant_name = name.clone();
                            // What no studies means for the role (a viewer without studies reads all).
                            let none = if token.role == AdminRole::Viewer { "all studies" } else { "no studies" };
                            view! {
                                <tr>
                                    <td>{token.name}</td>
                                    <td>{token.role.as_str()}</td>
                                    <td>{if grantable {
                                        view! {
                                            <ActionForm action=grant attr:class="token-studies">
                                                <input type="hidden" name="name" value=grant_name/>
                                                <input name="studies" value=studies placeholder=none aria-label="Studies (slugs, comma-separated)"/>
                                                <button type="submit" class="save-token-studies">"Save studies"</button>
                                            </ActionForm>
                                        }.into_any()
                                    } else if studies.is_empty() {
                                        "-".into_any()
                                    } else {
                                        studies.into_any()
                                    }}</td>
                                    <td>{if token.revoked { "revoked" } else { "active" }}</td>
                                    <td>{(!token.revoked).then(|| view! {
                                        <ActionForm action=revoke>
                                            <input type="hidden" name="name" value=name/>
                                            <button type="submit" class="revoke-token">"Revoke"</button>
                                        </ActionForm>
                                    })}</td>
                                </tr>
                            }
                        })
                        .collect_view();
                    view! {
                        <h2>"People (admin tokens)"</h2>
                        <table class="admin-tokens">
                            <thead><tr><th>"Name"</th><th>"Role"</th><th>"Studies"</th><th>"State"</th><th></th></tr></thead>
                            <tbody>{rows}</tbody>
                        </table>
                        <ActionForm action=create attr:class="create-token">
                            <label>"Name " <input name="name" required=true/></label>
                            <label>"Role " <select name="role">
                                <option value="researcher">"researcher: creates studies, works on the ones given"</option>
                                <option value="viewer">"viewer: reads results and exports"</option>
                                <option value="owner">"owner: everything"</option>
                            </select></label>
                            <label>"Studies (slugs, comma-separated) " <input name="studies"/></label>
                            <button type="submit" id="create-token">"Create token"</button>
                        </ActionForm>
                    }
                })
            })}
        </Suspense>
        {move || grant.value().get().and_then(|r| r.err()).map(|error| view! {
            <p class="error" id="token-studies-error">{error_text(&error)}</p>
        })}
        {move || create.value().get().map(|result| match result {
            Ok(token) => view! {
                <p class="notice" id="new-token">"New token (shown once; copy it now): " <code>{token}</code></p>
            }.into_any(),
            Err(error) => view! { <p class="error">{error_text(&error)}</p> }.into_any(),
        })}
    }
}

/// The owner's section: the newest entries of the audit log (logins and failed ones, study changes,
/// imports, exports, tokens), newest first. Text is shown as text: an actor or a target is what
/// someone typed.
#[component]
fn AuditLog(login: ServerAction<AdminLogin>, logout: ServerAction<AdminLogout>) -> impl IntoView {
    let entries = Resource::new(
        move || (login.version().get(), logout.version().get()),
        |_| admin_audit(),
    );
    view! {
        <Suspense fallback=|| ()>
            {move || Suspend::new(async move {
                entries.await.ok().flatten().map(|entries| {
                    let shown = entries.len();
                    let rows = entries
                        .into_iter()
                        .map(|entry| {
                            let seconds = entry.at_ms.div_euclid(1000).rem_euclid(60);
                            view! {
                                <tr>
                                    <td class="when">{format!("{}:{seconds:02}", utc_time(entry.at_ms))}</td>
                                    <td>{entry.actor}</td>
                                    <td class="action">{entry.action}</td>
                                    <td>{entry.target}</td>
                                    <td>{entry.detail}</td>
                                </tr>
                            }
                        })
                        .collect_view();
                    view! {
                        <h2>"Audit log"</h2>
                        <p class="hint">
                            {format!("The newest {shown} entries (UTC), newest first. All of them: ")}
                            <code>"moat audit"</code>" or "<code>"GET /api/v1/audit?limit=10000"</code>"."
                        </p>
                        <table class="audit-log">
                            <thead><tr><th>"When"</th><th>"Who"</th><th>"Action"</th><th>"Target"</th><th>"Detail"</th></tr></thead>
                            <tbody>{rows}</tbody>
                        </table>
                    }
                })
            })}
        </Suspense>
    }
}

#[component]
fn StudyList(studies: Vec<StudySummary>) -> impl IntoView {
    let rows = studies
        .into_iter()
        .map(|study| {
            view! {
                <tr>
                    <td><a href=format!("/admin/studies/{}", study.slug)>{study.title}</a></td>
                    <td><code>{study.slug}</code></td>
                    <td>{study.status}</td>
                    <td class="num">{study.prompts}</td>
                    <td class="num">{study.raters}</td>
                    <td class="num">{study.votes}</td>
                </tr>
            }
        })
        .collect_view();
    view! {
        <h2>"Studies"</h2>
        <table class="studies">
            <thead><tr><th>"Title"</th><th>"Slug"</th><th>"Status"</th><th>"Prompts"</th><th>"Raters"</th><th>"Votes"</th></tr></thead>
            <tbody>{rows}</tbody>
        </table>
    }
}

#[component]
fn CreateStudyForm(create: ServerAction<CreateStudy>) -> impl IntoView {
    let error = Signal::derive(move || {
        create
            .value()
            .get()
            .and_then(|r| r.err())
            .map(|e| error_text(&e))
    });
    view! {
        <h2>"New study"</h2>
        <ActionForm action=create attr:class="create-study settings-form">
            <SettingsFieldsets settings=StudySettings::default() error=error>
                <div class="field">
                    <label for="new-slug">"Slug"</label>
                    <input id="new-slug" name="slug" required=true pattern="[a-z0-9][a-z0-9-]{0,62}" placeholder="open-vs-closed" aria-describedby="help-slug"/>
                    <p class="help" id="help-slug">"The study's name in its links (/s/slug): lower-case letters, digits and dashes; it cannot be changed later."</p>
                </div>
                <TitleAndInstructions title=String::new() instructions=String::new()/>
            </SettingsFieldsets>
            <button type="submit" id="create-study">"Create study"</button>
        </ActionForm>
    }
}

/// The study's title and instructions, the first rows of the Study fieldset.
#[component]
fn TitleAndInstructions(title: String, instructions: String) -> impl IntoView {
    view! {
        <div class="field">
            <label for="study-title">"Title"</label>
            <input id="study-title" name="title" required=true value=title aria-describedby="help-title"/>
            <p class="help" id="help-title">"Shown to raters above the instructions and on the admin pages."</p>
        </div>
        <div class="field">
            <label for="study-instructions">"Instructions (markdown)"</label>
            <textarea id="study-instructions" name="instructions" rows="4" aria-describedby="help-instructions">{instructions}</textarea>
            <p class="help" id="help-instructions">"What raters read before they consent."</p>
        </div>
    }
}

/// The study's title, instructions and settings, editable (raters see the change on their next page).
#[component]
fn SettingsForm(report: StudyReport, action: ServerAction<UpdateStudy>) -> impl IntoView {
    let error = Signal::derive(move || {
        action
            .value()
            .get()
            .and_then(|r| r.err())
            .map(|e| error_text(&e))
    });
    view! {
        <h2>"Settings"</h2>
        <ActionForm action=action attr:class="study-settings settings-form">
            <input type="hidden" name="slug" value=report.summary.slug/>
            <SettingsFieldsets settings=report.settings error=error>
                <TitleAndInstructions title=report.summary.title instructions=report.instructions/>
            </SettingsFieldsets>
            <button type="submit" id="save-settings">"Save settings"</button>
        </ActionForm>
    }
}

/// The general message above or below a settings form: the parts of the error that name no setting
/// (those are shown beside their fields), or a pointer to the fields.
fn form_error_summary(text: &str) -> String {
    let general: Vec<&str> = text
        .split("; ")
        .filter(|part| !names_a_setting(part))
        .collect();
    if general.is_empty() {
        "Nothing was saved: see the messages beside the settings.".to_string()
    } else {
        general.join("; ")
    }
}

/// The settings fields of the create and settings forms, filled with `settings`: one fieldset per
/// group of the settings table (`moat_app::settings::SETTINGS`) and one row per setting, with its
/// label, its field, its help and its own error (the part of `error` that names it). `children`
/// are the first rows of the Study fieldset. The fields post as the server functions'
/// `settings: SettingsInput` argument.
#[component]
fn SettingsFieldsets(
    settings: StudySettings,
    error: Signal<Option<String>>,
    children: Children,
) -> impl IntoView {
    let form = SettingsInput::from_settings(&settings);
    let mut study_rows = Some(children);
    Group::ALL
        .into_iter()
        .map(|group| {
            let first = if group == Group::Study {
                study_rows.take().map(|rows| rows())
            } else {
                None
            };
            let rows = SETTINGS
                .iter()
                .filter(|setting| setting.group == group && setting.has_own_field())
                .map(|setting| {
                    let value = form.0.get(setting.form_field()).cloned();
                    setting_row(setting, value, error)
                })
                .collect_view();
            view! {
                <fieldset class=format!("settings-group settings-group-{}", group.name()) id=format!("settings-group-{}", group.name())>
                    <legend>{group.legend()}</legend>
                    {first}
                    {rows}
                </fieldset>
            }
        })
        .collect_view()
}

/// One setting's row: label, field, help, and the error that names it (if any).
fn setting_row(
    setting: &'static Setting,
    value: Option<String>,
    error: Signal<Option<String>>,
) -> AnyView {
    let key = setting.key;
    let id = format!("settings-{key}");
    let name = format!("settings[{}]", setting.form_field());
    let help_id = format!("help-{key}");
    let error_id = format!("error-{key}");
    let text = value.clone().unwrap_or_default();
    let control = match setting.kind {
        Kind::Switch => view! {
            <input type="checkbox" id=id.clone() name=name checked=value.is_some() aria-describedby=help_id.clone()/>
        }
        .into_any(),
        Kind::Count { min, max } | Kind::OptionalCount { min, max } => {
            let optional = matches!(setting.kind, Kind::OptionalCount { .. });
            view! {
                <input type="number" id=id.clone() name=name min=min.to_string()
                    max=(max != u32::MAX).then(|| max.to_string())
                    placeholder=optional.then_some("none") value=text aria-describedby=help_id.clone()/>
            }
            .into_any()
        }
        Kind::Share { .. } => view! {
            <input type="number" id=id.clone() name=name min="0" max="100" step="any" value=text aria-describedby=help_id.clone()/>
        }
        .into_any(),
        Kind::Link => view! {
            <input type="url" id=id.clone() name=name value=text aria-describedby=help_id.clone()/>
        }
        .into_any(),
        Kind::Choice(choices) => {
            let options = choices
                .iter()
                .map(|(choice, meaning)| {
                    view! { <option value=*choice selected=text == *choice>{*meaning}</option> }
                })
                .collect_view();
            view! { <select id=id.clone() name=name aria-describedby=help_id.clone()>{options}</select> }
                .into_any()
        }
        Kind::Lines { .. } => view! {
            <textarea id=id.clone() name=name rows="3" aria-describedby=help_id.clone()>{text}</textarea>
        }
        .into_any(),
        Kind::Text | Kind::OptionalText | Kind::Contestants | Kind::Weights => view! {
            <input id=id.clone() name=name value=text aria-describedby=help_id.clone()/>
        }
        .into_any(),
    };
    let field_error = move || {
        error
            .get()
            .map(|text| field_errors(&text, key).join("; "))
            .filter(|text| !text.is_empty())
    };
    let label = view! { <label for=id>{setting.label}</label> };
    let (class, body) = if setting.kind == Kind::Switch {
        ("field field-switch", view! { {control} {label} }.into_any())
    } else {
        ("field", view! { {label} {control} }.into_any())
    };
    view! {
        <div class=class data-setting=key>
            {body}
            <p class="help" id=help_id>{setting.help()}</p>
            {move || field_error().map(|text| view! { <p class="field-error" id=error_id.clone()>{text}</p> })}
        </div>
    }
    .into_any()
}

#[component]
pub fn AdminStudy() -> impl IntoView {
    let params = use_params_map();
    let query = use_query_map();
    let slug = move || params.read().get("slug").unwrap_or_default();
    let status_action = ServerAction::<SetStudyStatus>::new();
    let rater_action = ServerAction::<SetRaterStatus>::new();
    let settings_action = ServerAction::<UpdateStudy>::new();
    let report = Resource::new(
        move || {
            (
                slug(),
                status_action.version().get(),
                rater_action.version().get(),
                settings_action.version().get(),
            )
        },
        |(slug, ..)| get_study_report(slug),
    );
    let notice = move || query.read().get("notice");
    let import_error = move || query.read().get("error");
    let login = ServerAction::<AdminLogin>::new();
    let logout = ServerAction::<AdminLogout>::new();
    view! {
        <AdminBar refresh=login logout=logout/>
        <p><a href="/admin">"← all studies"</a></p>
        {move || notice().map(|n| view! { <p class="notice" id="notice">{n}</p> })}
        {move || import_error().map(|n| view! { <p class="error" id="import-error">{n}</p> })}
        <Suspense fallback=|| view! { <p>"Loading…"</p> }>
            {move || Suspend::new(async move {
                match report.await {
                    Err(error) => view! {
                        <p class="error">{error_text(&error)}</p>
                        <p><a href="/admin">"Log in"</a></p>
                    }.into_any(),
                    Ok(report) => view! {
                        <StudyReportView report=report status_action=status_action rater_action=rater_action settings_action=settings_action/>
                    }.into_any(),
                }
            })}
        </Suspense>
        {move || status_action.value().get().and_then(|r| r.err()).map(|e| view! { <p class="error">{error_text(&e)}</p> })}
        {move || settings_action.value().get().and_then(|r| r.err()).map(|e| view! { <p class="error" id="settings-error">{form_error_summary(&error_text(&e))}</p> })}
    }
}

#[component]
fn StudyReportView(
    report: StudyReport,
    status_action: ServerAction<SetStudyStatus>,
    rater_action: ServerAction<SetRaterStatus>,
    settings_action: ServerAction<UpdateStudy>,
) -> impl IntoView {
    let slug = report.summary.slug.clone();
    let settings_form = view! { <SettingsForm report=report.clone() action=settings_action/> };
    let status_buttons = ["open", "closed", "draft"]
        .into_iter()
        .filter(|status| *status != report.summary.status)
        .map(|status| {
            let label = match status {
                "open" => "Open the study",
                "closed" => "Close the study",
                _ => "Back to draft",
            };
            let slug = slug.clone();
            view! {
                <ActionForm action=status_action attr:class="inline">
                    <input type="hidden" name="slug" value=slug/>
                    <input type="hidden" name="status" value=status/>
                    <button type="submit" id=format!("status-{status}")>{label}</button>
                </ActionForm>
            }
        })
        .collect_view();
    let pairs = report
        .pairs
        .iter()
        .map(|pair| {
            view! {
                <tr><td>{pair.model_a.clone()}</td><td>{pair.model_b.clone()}</td>
                <td class="num">{pair.shown}</td><td class="num">{pair.votes}</td></tr>
            }
        })
        .collect_view();
    let results = report
        .results
        .iter()
        .map(|row| {
            view! {
                <tr>
                    <td>{row.model.clone()}</td><td>{row.provider.clone()}</td><td>{row.openness.clone()}</td>
                    <td class="num">{row.wins}</td><td class="num">{row.ties}</td>
                    <td class="num">{row.both_bad}</td><td class="num">{row.losses}</td>
                    <td class="num">{row.votes}</td>
                    <td class="num">{format!("{:.1}%", row.win_rate * 100.0)}</td>
                </tr>
            }
        })
        .collect_view();
    let rater_slug = report.summary.slug.clone();
    let raters = report
        .raters
        .clone()
        .into_iter()
        .map(|rater| {
            let slug = rater_slug.clone();
            let left_share = if rater.decided > 0 {
                format!(
                    "{:.0}%",
                    100.0 * rater.left_choices as f64 / rater.decided as f64
                )
            } else {
                String::new()
            };
            let (next, label) = if rater.status == "excluded" {
                ("active", "Include again")
            } else {
                ("excluded", "Exclude")
            };
            view! {
                <tr>
                    <td><code>{rater.pseudonym.clone()}</code>
                        {rater.completion_code.clone().map(|code| view! {
                            <br/><small class="completion-code" title="The session's completion code">"code "<code>{code}</code></small>
                        })}
                        {(rater.expired > 0).then(|| view! {
                            <br/><small class="expired" title="Comparisons this session left unvoted past the study's time; they went to other raters.">
                                {format!("{} expired unvoted", rater.expired)}
                            </small>
                        })}
                    </td>
                    <td>{rater.status.clone()}
                        {(rater.other_sessions > 0).then(|| view! {
                            <span class="duplicate" title="The same participant id started other sessions (another browser, or someone else using the id); each keeps its own cookie and comparisons.">
                                {format!(" (participant id also in {} other session{})", rater.other_sessions, if rater.other_sessions == 1 { "" } else { "s" })}
                            </span>
                        })}
                    </td>
                    <td class="num">{rater.votes}</td>
                    <td class="num">{rater.mean_seconds.map(|s| format!("{s:.1}")).unwrap_or_default()}</td>
                    <td class="num">{left_share}</td>
                    <td class="num">{rater.checks_passed}</td>
                    <td class="num">{rater.checks_failed}</td>
                    <td class="flags">{rater.flags.iter().map(|flag| view! {
                        <span class="flag" data-kind=flag.kind.clone() title=flag.reason.clone()>{flag.reason.clone()}</span><br/>
                    }).collect_view()}</td>
                    <td>
                        <ActionForm action=rater_action attr:class="inline">
                            <input type="hidden" name="slug" value=slug/>
                            <input type="hidden" name="pseudonym" value=rater.pseudonym.clone()/>
                            <input type="hidden" name="status" value=next/>
                            <button type="submit">{label}</button>
                        </ActionForm>
                    </td>
                </tr>
            }
        })
        .collect_view();
    let link = format!(
        "/s/{}?{}=",
        report.summary.slug, report.settings.participant_param
    );
    let check_items = match report.summary.check_items {
        1 => "1 check item".to_string(),
        n => format!("{n} check items"),
    };
    let check_settings = if report.settings.check_rate > 0.0 {
        format!(
            "Quality checks: {:.0}% of each rater's comparisons, from {check_items}; {}.",
            report.settings.check_rate * 100.0,
            match report.settings.max_failed_checks {
                Some(n) => format!("raters who fail more than {n} are excluded automatically"),
                None => "no automatic exclusion".to_string(),
            }
        )
    } else if report.summary.check_items > 0 {
        format!("No quality checks are shown in this study ({check_items} imported; set a share in Settings to show them).")
    } else {
        "No quality checks are shown in this study.".to_string()
    };
    let flagged_rows = report
        .flagged
        .iter()
        .map(|flag| {
            view! {
                <tr><td><code>{flag.prompt.clone()}</code></td><td>{flag.model.clone()}</td><td>{flag.words.clone()}</td></tr>
            }
        })
        .collect_view();
    let flagged_summary = match report.flagged_total {
        0 => "No response names a model or its maker.".to_string(),
        n => format!(
            "{n} {} a model or its maker (a rater who reads it knows, or guesses, who wrote it). {} A flag is a prompt for review: \"Claude Monet\" is flagged too.",
            if n == 1 { "response names" } else { "responses name" },
            if report.settings.show_flagged {
                "Their items are shown to raters (Settings); the leaderboard leaves out votes on flagged comparisons unless asked."
            } else {
                "Their items are not shown to raters (see Settings); votes on flagged comparisons are left out of the leaderboard."
            }
        ),
    };
    let flagged_more = (report.flagged_total > report.flagged.len() as i64).then(|| {
        format!(
            "The first {} of {} are listed.",
            report.flagged.len(),
            report.flagged_total
        )
    });
    let seconds = report
        .median_seconds_per_vote
        .map(|s| format!("{s:.1} s median per vote"))
        .unwrap_or_else(|| "no votes yet".to_string());
    view! {
        <h1>{report.summary.title.clone()}</h1>
        // A div, not a p: the buttons are forms, and an HTML parser closes a <p> before a <form>, which
        // left the browser's page different from the server's and stopped hydration.
        <div class="status-line">"Status: " <strong id="study-status">{report.summary.status.clone()}</strong> " " {status_buttons}</div>
        <p>"Rater link: " <code>{link}</code></p>
        <p id="progress-summary">{format!(
            "{} prompts, {} models, {} raters, {} votes; {}",
            report.summary.prompts, report.summary.models, report.summary.raters, report.summary.votes, seconds
        )}</p>
        {report.battles.clone().map(|battles| view! { <BattlesPanel battles=battles/> })}
        {(report.settings.active_sampling != "uniform").then(|| view! {
            <RewardModelPanel policy=report.settings.active_sampling.clone() model=report.reward_model.clone()/>
        })}
        <h2>"Import prompts and responses"</h2>
        <form method="post" enctype="multipart/form-data" action=format!("/admin/studies/{}/import", report.summary.slug)>
            <select name="format">
                <option value="moat">"Moat prompts and responses (JSONL)"</option>
                <option value="hh-rlhf">"Anthropic HH-RLHF (JSONL, .gz)"</option>
                <option value="oasst">"OpenAssistant message trees"</option>
                <option value="arena">"Chatbot Arena battles"</option>
                <option value="trl">"TRL preference JSONL"</option>
                <option value="votes">"Moat votes export"</option>
            </select>
            " "
            <input type="file" name="file" accept=".jsonl,.json,.gz,.parquet" required=true/>
            <button type="submit" id="import">"Import"</button>
        </form>
        <h2>"Results"</h2>
        <table class="results" id="results">
            <thead><tr><th>"Model"</th><th>"Provider"</th><th>"Openness"</th><th>"Wins"</th><th>"Ties"</th>
                <th>"Both bad"</th><th>"Losses"</th><th>"Votes"</th><th>"Win rate"</th></tr></thead>
            <tbody>{results}</tbody>
        </table>
        <p>"Download: "
            <a class="button" id="download-trl" href=format!("/api/v1/studies/{}/export?format=trl", report.summary.slug)>"TRL JSONL"</a>
            {["dpo", "kto", "hh-rlhf", "openai", "arena", "votes"].into_iter().map(|format| view! {
                " " <a href=format!("/api/v1/studies/{}/export?format={format}", report.summary.slug)>{format}</a>
            }).collect_view()}
            " " <a href=format!("/api/v1/studies/{}/export?format=trl&container=parquet", report.summary.slug)>"TRL Parquet"</a>
            " " <a href=format!("/api/v1/studies/{}/export?format=votes&container=csv", report.summary.slug)>"votes CSV"</a>
        </p>
        <p><a class="button" id="leaderboard-link" href=format!("/admin/studies/{}/leaderboard", report.summary.slug)>
            "Leaderboard and statistics"</a></p>
        <h2>"Progress by model pair"</h2>
        <table class="pairs">
            <thead><tr><th>"Model A"</th><th>"Model B"</th><th>"Shown"</th><th>"Votes"</th></tr></thead>
            <tbody>{pairs}</tbody>
        </table>
        <h2>"Identity flags"</h2>
        <p id="flagged-summary">{flagged_summary}</p>
        {(!report.flagged.is_empty()).then(|| view! {
            <table class="flagged" id="flagged">
                <thead><tr><th>"Prompt"</th><th>"Model"</th><th>"Matched words"</th></tr></thead>
                <tbody>{flagged_rows}</tbody>
            </table>
        })}
        {flagged_more.map(|text| view! { <p class="hint">{text}</p> })}
        {settings_form}
        <h2>"Raters"</h2>
        <p class="hint">"Excluded raters are left out of the leaderboard, the statistics and the exports. Very short times per vote and one side chosen nearly always are the usual signs of careless rating. Flags come from tests on every rater's votes (votes the crowd rarely gives, favouring one model whenever it appears, one side, a median under 3 s per vote); the leaderboard can leave flagged raters out."</p>
        <p id="check-settings">{check_settings}</p>
        <table class="raters" id="raters">
            <thead><tr><th>"Rater"</th><th>"Status"</th><th>"Votes"</th><th>"Mean s/vote"</th><th>"Left side"</th><th>"Checks passed"</th><th>"Checks failed"</th><th>"Flags"</th><th></th></tr></thead>
            <tbody>{raters}</tbody>
        </table>
    }
}

/// An arena study's battles: how many counted, how many were void and why.
#[component]
fn BattlesPanel(battles: BattleReport) -> impl IntoView {
    let rows = battles
        .recent_void
        .iter()
        .map(|void| {
            view! {
                <tr><td><code>{void.battle.clone()}</code></td><td>{void.model_a.clone()}</td>
                <td>{void.model_b.clone()}</td><td>{void.error.clone()}</td></tr>
            }
        })
        .collect_view();
    let contestants = if battles.contestants.is_empty() {
        "none".to_string()
    } else {
        battles.contestants.join(", ")
    };
    view! {
        <h2>"Arena battles"</h2>
        {(!battles.models_available).then(|| view! {
            <p class="error">"This server has no model registry: raters cannot start battles. Start it with "
                <code>"moat serve --models FILE"</code>"."</p>
        })}
        <p id="battle-summary">{format!(
            "Contestants: {contestants}. {} battles complete (each is a comparison above), {} void (a model failed, timed out, or the rater left; never counted), {} unfinished.",
            battles.complete, battles.void, battles.streaming
        )}</p>
        {(!battles.recent_void.is_empty()).then(|| view! {
            <table class="void-battles" id="void-battles">
                <thead><tr><th>"Battle"</th><th>"Model A"</th><th>"Model B"</th><th>"Error"</th></tr></thead>
                <tbody>{rows}</tbody>
            </table>
        })}
    }
}

/// Active sampling: the reward model the assigner uses, and how well it predicts held-out votes.
#[component]
fn RewardModelPanel(policy: String, model: Option<RewardModelStatus>) -> impl IntoView {
    let text = match &model {
        None => format!(
            "Assignment policy: {policy}. No reward model yet: it is trained in the background once the study has {} decided votes; until then comparisons are assigned uniformly.",
            crate::wire::ACTIVE_FIRST_TRAINING_VOTES
        ),
        Some(m) => {
            let accuracy = match (m.eval_accuracy, m.eval_accuracy_low, m.eval_accuracy_high) {
                (Some(a), Some(low), Some(high)) => format!(
                    "accuracy on them {:.1}% (95% interval {:.1}–{:.1}%)",
                    a * 100.0,
                    low * 100.0,
                    high * 100.0
                ),
                _ => "no accuracy yet".to_string(),
            };
            let of_all = if m.votes > m.train_pairs + m.eval_pairs {
                format!(" (the latest of {})", m.votes)
            } else {
                String::new()
            };
            format!(
                "Assignment policy: {policy}. Reward model from {} decided votes{of_all}, {} to train and {} held out (other prompts): {accuracy}; {} responses scored{}.",
                m.train_pairs + m.eval_pairs,
                m.train_pairs,
                m.eval_pairs,
                m.responses_scored,
                if m.retraining { "; retraining on newer votes now" } else { "" }
            )
        }
    };
    let history = model.map(|m| m.history).unwrap_or_default();
    view! {
        <h2>"Active sampling"</h2>
        <p id="reward-model">{text}</p>
        {(!history.is_empty()).then(|| view! { <AccuracyChart points=history/> })}
    }
}

/// Held-out accuracy (with its 95% interval) against the votes each training used: a line over
/// 50–100% with a bar per training, drawn as SVG on the server (no script needed).
#[component]
fn AccuracyChart(points: Vec<AccuracyPoint>) -> impl IntoView {
    const WIDTH: f64 = 480.0;
    const HEIGHT: f64 = 160.0;
    const PAD: f64 = 28.0;
    let most_votes = points.iter().map(|p| p.votes).max().unwrap_or(1).max(1) as f64;
    let x = move |votes: usize| PAD + (WIDTH - 2.0 * PAD) * votes as f64 / most_votes;
    // Accuracy below a coin flip is drawn at the bottom edge.
    let y = move |accuracy: f64| {
        PAD + (HEIGHT - 2.0 * PAD) * (1.0 - ((accuracy - 0.5) / 0.5).clamp(0.0, 1.0))
    };
    let line = points
        .iter()
        .map(|p| format!("{:.1},{:.1}", x(p.votes), y(p.accuracy)))
        .collect::<Vec<_>>()
        .join(" ");
    let bars = points
        .iter()
        .map(|p| {
            view! {
                <line class="interval" x1=format!("{:.1}", x(p.votes)) x2=format!("{:.1}", x(p.votes))
                    y1=format!("{:.1}", y(p.low)) y2=format!("{:.1}", y(p.high))>
                    <title>{format!("{} votes: {:.1}% ({:.1}–{:.1}%)", p.votes, p.accuracy * 100.0, p.low * 100.0, p.high * 100.0)}</title>
                </line>
            }
        })
        .collect_view();
    let last = points.last().map(|p| p.votes).unwrap_or(0);
    view! {
        <svg id="accuracy-chart" class="accuracy-chart" role="img" viewBox=format!("0 0 {WIDTH} {HEIGHT}")
            aria-label=format!("Held-out accuracy of the reward model after each of {} trainings, up to {last} votes", points.len())>
            <line class="axis" x1=PAD x2=WIDTH - PAD y1=HEIGHT - PAD y2=HEIGHT - PAD/>
            <line class="axis" x1=PAD x2=PAD y1=PAD y2=HEIGHT - PAD/>
            <text x=2 y=PAD + 4.0>"100%"</text>
            <text x=2 y=HEIGHT - PAD + 4.0>"50%"</text>
            <text x=WIDTH - PAD y=HEIGHT - 6.0 text-anchor="end">{format!("{last} votes")}</text>
            {bars}
            <polyline class="accuracy" points=line fill="none"/>
        </svg>
    }
}

/// The server's model registry (`moat serve --models FILE`): what the arena and `/v1` can use.
#[component]
fn ModelRegistry(models: Vec<RegistryModelView>) -> impl IntoView {
    if models.is_empty() {
        return view! {
            <h2>"Models"</h2>
            <p class="hint" id="models-none">"No model registry: start the server with "
                <code>"moat serve --models FILE"</code>" to run arena studies and serve "<code>"/v1"</code>"."</p>
        }
        .into_any();
    }
    let rows = models
        .into_iter()
        .map(|model| {
            let key = match (&model.api_key_env, model.api_key_set) {
                (None, _) => "none".to_string(),
                (Some(var), true) => format!("${var} (set)"),
                (Some(var), false) => format!("${var} (NOT SET)"),
            };
            view! {
                <tr>
                    <td>{model.name}</td><td>{model.provider}</td><td>{model.openness}</td>
                    <td>{model.kind}</td><td><code>{model.target}</code></td><td>{key}</td>
                    <td class="num">{model.max_tokens}</td>
                    <td class="num">{model.temperature.map(|t| format!("{t}")).unwrap_or_else(|| "default".into())}</td>
                </tr>
            }
        })
        .collect_view();
    view! {
        <h2>"Models"</h2>
        <p class="hint">"The server's model registry; arena studies choose their contestants from it. Keys are read from the environment and never shown."</p>
        <table class="models" id="models">
            <thead><tr><th>"Name"</th><th>"Provider"</th><th>"Openness"</th><th>"Kind"</th><th>"Reaches"</th>
                <th>"API key"</th><th>"Max tokens"</th><th>"Temperature"</th></tr></thead>
            <tbody>{rows}</tbody>
        </table>
    }
    .into_any()
}

/// The registry file, editable: saved only if every model in it loads (keys stay in the environment).
#[component]
fn RegistryEditor(registry: RegistryView, action: ServerAction<SaveModels>) -> impl IntoView {
    let (Some(file), Some(text)) = (registry.file, registry.text) else {
        return ().into_any();
    };
    view! {
        <details class="registry-editor" open=move || action.value().get().is_some_and(|r| r.is_err())>
            <summary>{format!("Edit the registry ({file})")}</summary>
            <ActionForm action=action>
                <textarea name="registry" rows="14" id="registry-text" spellcheck="false">{text}</textarea>
                <p class="hint">"Saving checks every entry and loads its model first; nothing changes if one fails. Battles already running keep their models."</p>
                <button type="submit" id="save-models">"Save the registry"</button>
            </ActionForm>
            {move || action.value().get().map(|result| match result {
                Ok(()) => view! { <p class="notice" id="registry-saved">"Saved; new battles and /v1 requests use it."</p> }.into_any(),
                Err(error) => view! { <p class="error" id="registry-error">{error_text(&error)}</p> }.into_any(),
            })}
        </details>
    }
    .into_any()
}
