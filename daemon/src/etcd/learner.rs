//! This node's own member: look at it (for progress), promote it, remove it.

use super::client::{Client, EtcdError};
use super::health;
use super::members::{self, Member};
use super::progress::Seen;

/// One look at the learner with `own_peer_url`: the member list, then its Status
/// (on its client URL, else `own_client_url`) and the leader's.
pub async fn look(
    client: &Client,
    endpoints: &[String],
    own_peer_url: &str,
    own_client_url: &str,
) -> Result<(Seen, Option<Member>), EtcdError> {
    let (_, list) = client
        .first(endpoints, async |c, ep| c.member_list(ep).await)
        .await?;
    let Some(own) = members::own_member(&list, own_peer_url).cloned() else {
        return Ok((Seen::Gone, None));
    };
    if !own.is_learner {
        return Ok((Seen::Promoted, Some(own)));
    }
    if own.is_unstarted_learner() {
        return Ok((Seen::NotStarted, Some(own)));
    }
    let url = own
        .client_urls
        .first()
        .cloned()
        .unwrap_or_else(|| own_client_url.to_string());
    let learner = match client.status(&url).await {
        Ok(s) => s,
        Err(e) => return Ok((Seen::Silent(health::short(&e)), Some(own))),
    };
    // The leader's applied index, from the leader itself.
    let leader_applied = match learner.leader.and_then(|l| list.iter().find(|m| m.id == l)) {
        Some(leader) => {
            let urls = health::endpoints_to_ask(&[], std::slice::from_ref(leader));
            client
                .first(&urls, async |c, ep| c.status(ep).await)
                .await
                .ok()
                .map(|(_, s)| s.applied_index)
        }
        None => None,
    };
    Ok((
        Seen::Applied {
            learner: learner.applied_index,
            leader: leader_applied,
        },
        Some(own),
    ))
}

/// Removes `member`; "member not found" (removed meanwhile) counts as done.
pub async fn remove(
    client: &Client,
    endpoints: &[String],
    member: &Member,
) -> Result<(), EtcdError> {
    match client
        .first(endpoints, async |c, ep| {
            c.member_remove(ep, member.id).await
        })
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if e.is_member_not_found() => Ok(()),
        Err(e) => Err(e),
    }
}

/// Removes this node's member (matched by peer URL), if there is one. Returns it.
pub async fn remove_own(
    client: &Client,
    endpoints: &[String],
    own_peer_url: &str,
) -> Result<Option<Member>, EtcdError> {
    let (_, list) = client
        .first(endpoints, async |c, ep| c.member_list(ep).await)
        .await?;
    match members::own_member(&list, own_peer_url) {
        Some(own) => {
            remove(client, endpoints, own).await?;
            Ok(Some(own.clone()))
        }
        None => Ok(None),
    }
}
