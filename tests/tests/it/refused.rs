//! A pairing refused by the other side says so on the dialling side: its
//! `status` and its log name the peer and what to run there.

use crate::mirror_util::*;

#[test]
fn the_dialler_hears_that_its_key_was_refused() {
    let (a, mut x) = untrusted_dialler();
    x.start(false);
    let all: [&dyn Node; 2] = [&a, &x];
    wait_until(
        "X's status to say A refused it",
        || {
            status(x.store())
                .and_then(|st| peer_in(&st, &a.id).map(|p| p["refused_us"] == true))
                .unwrap_or(false)
        },
        || describe_all(&all),
    );
    let advice = format!(
        "refused by {}: this node is not in its trusted list; run 'backer peer add {}' there",
        a.id, x.id
    );
    let text = backer(x.store(), &["status"]);
    text.assert_success();
    assert!(text.stdout.contains(&advice), "{text:#?}");
    let peers = backer(x.store(), &["peer", "list"]);
    assert!(peers.stdout.contains(&advice), "{peers:#?}");
    assert!(
        x.log().contains(&format!("refused by {}", a.id)),
        "{}",
        describe_all(&all)
    );
    assert!(!connected(&x.status(), &a.id));

    // Once A trusts X, they connect and the refusal is gone.
    a.add_peer(&x.id, None);
    wait_connected(&x, &a, &all);
    let st = x.status();
    assert_eq!(peer_in(&st, &a.id).unwrap()["refused_us"], false, "{st}");
}
