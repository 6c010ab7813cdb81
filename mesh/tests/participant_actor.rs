//! Behaviour of the Participant and Room actors together, with the media engine replaced by a
//! test that reads its command queue and answers: join, chat, bad input, publishing and the
//! automatic subscription of the other participant.

use kaskade_mesh::RoomDirectory;
use kaskade_mesh::admission::{
    Admission, JoinCredentials, JoinDenied, JoinGate, JoinGrant, ResumeClaim,
};
use kaskade_mesh::engine_api::{
    EngineCommand, EngineHandle, PublishOutcome, SubscribeOffer, TrackDescriptor,
};
use kaskade_mesh::participant::{
    ParticipantActor, ParticipantArgs, ParticipantMsg, ParticipantOutput,
};
use kaskade_proto::signal::{ErrorCode, MediaKind, Role, ServerMessage, TrackSource};
use kaskade_proto::{ParticipantId, RoomName, TrackId};
use ractor::{Actor, ActorRef};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(5);

struct Client {
    actor: ActorRef<ParticipantMsg>,
    output: UnboundedReceiver<ParticipantOutput>,
}

/// A join policy for the tests: room "elsewhere" redirects, room "closed" is refused, and a
/// token "resume:<id>" resumes participant <id> as "Again".
struct TestGate;

#[async_trait::async_trait]
impl JoinGate for TestGate {
    async fn admit(&self, room: &RoomName, _site: Option<&str>, _resuming: bool) -> Admission {
        match room.as_str() {
            "elsewhere" => Admission::Redirect {
                url: "ws://other/ws".into(),
            },
            "closed" => Admission::Refused {
                code: ErrorCode::Unavailable,
                message: "no".into(),
            },
            _ => Admission::Here,
        }
    }

    /// Room "guarded" needs token "watch" (audience at most, named "Watcher") or "teach" (host).
    async fn authorize(
        &self,
        room: &RoomName,
        credentials: JoinCredentials<'_>,
    ) -> Result<JoinGrant, JoinDenied> {
        if room.as_str() != "guarded" {
            return Ok(JoinGrant::default());
        }
        let (user, ceiling) = match credentials.token {
            Some("watch") => ("watcher", Role::Audience),
            Some("teach") => ("teacher", Role::Host),
            _ => {
                return Err(JoinDenied {
                    code: ErrorCode::Unauthorized,
                    message: "log in first".into(),
                });
            }
        };
        Ok(JoinGrant {
            user: Some(user.into()),
            ceiling: Some(ceiling),
            name: (user == "watcher").then(|| "Watcher".into()),
            ..JoinGrant::default()
        })
    }

    fn issue_resume(
        &self,
        _room: &RoomName,
        participant: &ParticipantId,
        _name: &str,
        ceiling: Option<Role>,
    ) -> String {
        match ceiling {
            Some(Role::Audience) => format!("resume-audience:{participant}"),
            _ => format!("resume:{participant}"),
        }
    }

    fn verify_resume(&self, _room: &RoomName, token: &str) -> Result<ResumeClaim, String> {
        let (id, ceiling) = if let Some(id) = token.strip_prefix("resume-audience:") {
            (id, Some(Role::Audience))
        } else {
            (token.strip_prefix("resume:").ok_or("bad token")?, None)
        };
        Ok(ResumeClaim {
            participant: ParticipantId(id.into()),
            name: "Again".into(),
            ceiling,
        })
    }

    fn alternates(&self) -> Vec<String> {
        vec!["ws://alt/ws".into()]
    }
}

impl Client {
    async fn start(id: &str, engine: &EngineHandle, rooms: &Arc<RoomDirectory>) -> Self {
        let (tx, output) = unbounded_channel();
        let args = ParticipantArgs {
            id: ParticipantId(id.into()),
            engine: engine.clone(),
            rooms: rooms.clone(),
            output: tx,
            gate: Arc::new(TestGate),
        };
        let (actor, _) = Actor::spawn(None, ParticipantActor, args).await.unwrap();
        Client { actor, output }
    }

    fn say(&self, json: &str) {
        self.actor.cast(ParticipantMsg::Text(json.into())).unwrap();
    }

    /// The next message the participant sends, skipping none.
    async fn next(&mut self) -> ServerMessage {
        match timeout(WAIT, self.output.recv()).await {
            Ok(Some(ParticipantOutput::Send(m))) => m,
            other => panic!("expected a message, got {other:?}"),
        }
    }

    /// Waits for the first message matching `pick`, skipping others.
    async fn until<T>(&mut self, mut pick: impl FnMut(&ServerMessage) -> Option<T>) -> T {
        loop {
            let m = self.next().await;
            if let Some(t) = pick(&m) {
                return t;
            }
        }
    }
}

async fn next_command(commands: &mut UnboundedReceiver<EngineCommand>) -> EngineCommand {
    timeout(WAIT, commands.recv())
        .await
        .expect("engine command")
        .unwrap()
}

#[tokio::test]
async fn join_chat_and_bad_input() {
    let (engine, _commands) = EngineHandle::new();
    let rooms = RoomDirectory::new();
    let mut ada = Client::start("pada", &engine, &rooms).await;

    ada.say(r#"{"type":"chat","text":"too early"}"#);
    assert!(matches!(
        ada.next().await,
        ServerMessage::Error {
            code: ErrorCode::NotJoined,
            ..
        }
    ));

    ada.say(r#"{"type":"join","room":"r1","name":"Ada"}"#);
    let ServerMessage::Joined { participants, .. } = ada.next().await else {
        panic!("expected joined")
    };
    assert!(participants.is_empty(), "the room was empty before Ada");

    ada.say("this is not json");
    assert!(matches!(
        ada.next().await,
        ServerMessage::Error {
            code: ErrorCode::InvalidJson,
            fatal: false,
            ..
        }
    ));
    ada.say(r#"{"type":"teleport"}"#);
    assert!(matches!(
        ada.next().await,
        ServerMessage::Error {
            code: ErrorCode::UnknownMessage,
            ..
        }
    ));

    let mut bob = Client::start("pbob", &engine, &rooms).await;
    bob.say(r#"{"type":"join","room":"r1","name":"Bob"}"#);
    let ServerMessage::Joined { participants, .. } = bob.next().await else {
        panic!("expected joined")
    };
    assert_eq!(participants.len(), 1);
    let joined = ada
        .until(|m| match m {
            ServerMessage::ParticipantJoined { participant } => Some(participant.name.clone()),
            _ => None,
        })
        .await;
    assert_eq!(joined, "Bob");

    bob.say(r#"{"type":"chat","text":"hi Ada"}"#);
    let (name, text) = ada
        .until(|m| match m {
            ServerMessage::Chat { name, text, .. } => Some((name.clone(), text.clone())),
            _ => None,
        })
        .await;
    assert_eq!((name.as_str(), text.as_str()), ("Bob", "hi Ada"));

    bob.say(r#"{"type":"leave"}"#);
    let left = ada
        .until(|m| match m {
            ServerMessage::ParticipantLeft { participant } => Some(participant.clone()),
            _ => None,
        })
        .await;
    assert_eq!(left, ParticipantId("pbob".into()));
    assert_eq!(rooms.list()[0].1.members, 1);
}

#[tokio::test]
async fn a_published_track_is_offered_to_the_other_participant() {
    let (engine, mut commands) = EngineHandle::new();
    let rooms = RoomDirectory::new();
    let mut ada = Client::start("pada", &engine, &rooms).await;
    let mut bob = Client::start("pbob", &engine, &rooms).await;
    ada.say(r#"{"type":"join","room":"r2","name":"Ada"}"#);
    ada.next().await;
    bob.say(r#"{"type":"join","room":"r2","name":"Bob"}"#);
    bob.next().await;

    ada.say(
        r#"{"type":"publish_offer","sdp":"v=0 (the engine parses it)","sources":{"0":"screen"}}"#,
    );
    let EngineCommand::Publish {
        participant,
        sources,
        reply,
        ..
    } = next_command(&mut commands).await
    else {
        panic!("expected a publish command")
    };
    assert_eq!(participant.0, "pada");
    assert_eq!(sources.get("0"), Some(&TrackSource::Screen));
    let track = TrackDescriptor {
        id: TrackId("tscreen".into()),
        participant: participant.clone(),
        kind: MediaKind::Video,
        source: TrackSource::Screen,
        layers: vec![],
    };
    reply
        .send(Ok(PublishOutcome {
            session: 1,
            answer: "v=0 answer".into(),
            tracks: BTreeMap::from([("0".to_owned(), track.clone())]),
            removed: vec![],
        }))
        .unwrap();
    let answered = ada
        .until(|m| match m {
            ServerMessage::PublishAnswer { sdp, tracks } => Some((sdp.clone(), tracks.clone())),
            _ => None,
        })
        .await;
    assert_eq!(answered.0, "v=0 answer");
    assert_eq!(answered.1.get("0"), Some(&track.id));

    // Bob is auto-subscribed: his actor asks the engine for a subscribe session with the track.
    let EngineCommand::SubscribeOffering {
        participant,
        tracks,
        reply,
        ..
    } = next_command(&mut commands).await
    else {
        panic!("expected a subscribe command")
    };
    assert_eq!(participant.0, "pbob");
    assert_eq!(tracks, vec![track.clone()]);
    reply
        .send(Ok(SubscribeOffer {
            session: 2,
            offer: "v=0 offer".into(),
            tracks: BTreeMap::from([("0".to_owned(), track.id.clone())]),
        }))
        .unwrap();
    let offered = bob
        .until(|m| match m {
            ServerMessage::SubscribeOffer { tracks, .. } => Some(tracks.clone()),
            _ => None,
        })
        .await;
    assert_eq!(offered.get("0"), Some(&track.id));

    // Ada leaves without a word: her track is withdrawn and her sessions closed.
    ada.actor.cast(ParticipantMsg::Disconnected).unwrap();
    let gone = bob
        .until(|m| match m {
            ServerMessage::TrackUnpublished { track } => Some(track.clone()),
            _ => None,
        })
        .await;
    assert_eq!(gone, track.id);
    let EngineCommand::Close { session } = next_command(&mut commands).await else {
        panic!("expected the publish session to be closed")
    };
    assert_eq!(session, 1);
}

#[tokio::test]
async fn an_offer_with_too_many_tracks_is_refused_and_its_connection_closed() {
    let (engine, mut commands) = EngineHandle::new();
    let rooms = RoomDirectory::new();
    let mut ada = Client::start("pada", &engine, &rooms).await;
    ada.say(r#"{"type":"join","room":"r9","name":"Ada"}"#);
    ada.next().await;
    ada.say(r#"{"type":"publish_offer","sdp":"v=0 (many m-lines)"}"#);
    let EngineCommand::Publish {
        participant, reply, ..
    } = next_command(&mut commands).await
    else {
        panic!("expected a publish command")
    };
    let too_many = kaskade_mesh::participant::MAX_TRACKS_PER_PARTICIPANT + 1;
    let tracks = (0..too_many)
        .map(|i| {
            let track = TrackDescriptor {
                id: TrackId(format!("t{i}")),
                participant: participant.clone(),
                kind: MediaKind::Audio,
                source: TrackSource::Microphone,
                layers: vec![],
            };
            (i.to_string(), track)
        })
        .collect();
    reply
        .send(Ok(PublishOutcome {
            session: 7,
            answer: "v=0 answer".into(),
            tracks,
            removed: vec![],
        }))
        .unwrap();
    let refused = ada
        .until(|m| match m {
            ServerMessage::Error { code, message, .. } => Some((*code, message.clone())),
            ServerMessage::PublishAnswer { .. } => panic!("answered an offer over the cap"),
            _ => None,
        })
        .await;
    assert_eq!(refused.0, ErrorCode::LimitReached, "{refused:?}");
    assert!(refused.1.contains("at most"), "{refused:?}");
    let EngineCommand::Close { session } = next_command(&mut commands).await else {
        panic!("expected the publish connection to be closed")
    };
    assert_eq!(session, 7);
    assert!(
        rooms.list().iter().all(|(_, c)| c.tracks == 0),
        "nothing was published"
    );
}

#[tokio::test]
async fn joins_are_redirected_or_refused_as_the_gate_says() {
    let (engine, _commands) = EngineHandle::new();
    let rooms = RoomDirectory::new();
    let mut ada = Client::start("pada", &engine, &rooms).await;
    ada.say(r#"{"type":"join","room":"closed","name":"Ada"}"#);
    assert!(matches!(
        ada.next().await,
        ServerMessage::Error {
            code: ErrorCode::Unavailable,
            fatal: false,
            ..
        }
    ));
    assert!(rooms.list().is_empty(), "a refused join opens no room");
    ada.say(r#"{"type":"join","room":"elsewhere","name":"Ada"}"#);
    assert_eq!(
        ada.next().await,
        ServerMessage::Redirect {
            url: "ws://other/ws".into()
        }
    );
    match timeout(WAIT, ada.output.recv()).await {
        Ok(Some(ParticipantOutput::Close { .. })) => {}
        other => panic!("expected the socket to be closed after a redirect, got {other:?}"),
    }
    let mut eve = Client::start("peve", &engine, &rooms).await;
    eve.say(r#"{"type":"join","room":"r1","name":"Eve","resume":"forged"}"#);
    assert!(matches!(
        eve.next().await,
        ServerMessage::Error {
            code: ErrorCode::ResumeRejected,
            ..
        }
    ));
}

#[tokio::test]
async fn access_control_refuses_or_caps_a_join_and_the_resume_token_keeps_the_cap() {
    let (engine, _commands) = EngineHandle::new();
    let rooms = RoomDirectory::new();
    let mut eve = Client::start("peve", &engine, &rooms).await;
    eve.say(r#"{"type":"join","room":"guarded","name":"Eve"}"#);
    assert!(matches!(
        eve.next().await,
        ServerMessage::Error {
            code: ErrorCode::Unauthorized,
            fatal: false,
            ..
        }
    ));
    eve.say(r#"{"type":"join","room":"guarded","name":"Eve","token":"forged"}"#);
    assert!(matches!(
        eve.next().await,
        ServerMessage::Error {
            code: ErrorCode::Unauthorized,
            ..
        }
    ));
    assert!(
        rooms.list().is_empty(),
        "an unauthorised join opens no room"
    );

    // The first participant would host an open room; a watcher's access caps it at audience,
    // and the account's name replaces the one asked for.
    let mut ada = Client::start("pada", &engine, &rooms).await;
    ada.say(r#"{"type":"join","room":"guarded","name":"Boss","role":"host","token":"watch"}"#);
    let ServerMessage::Joined {
        role,
        participants,
        resume_token,
        ..
    } = ada
        .until(|m| matches!(m, ServerMessage::Joined { .. }).then(|| m.clone()))
        .await
    else {
        unreachable!()
    };
    assert_eq!(role, Role::Audience);
    assert!(participants.is_empty());
    assert_eq!(resume_token, "resume-audience:pada");
    let mut teacher = Client::start("pteach", &engine, &rooms).await;
    teacher.say(r#"{"type":"join","room":"guarded","name":"T","token":"teach"}"#);
    let (role, listed) = teacher
        .until(|m| match m {
            ServerMessage::Joined {
                role, participants, ..
            } => Some((*role, participants.clone())),
            _ => None,
        })
        .await;
    assert_eq!(
        role,
        Role::Host,
        "the moderator's access hosts although the room is not empty"
    );
    assert_eq!(listed.len(), 1);
    assert_eq!(
        listed[0].name, "Watcher",
        "the account's name, not the one asked for"
    );

    // Resuming with the audience token keeps the cap, no access token needed.
    let mut again = Client::start("pnew", &engine, &rooms).await;
    again.say(r#"{"type":"join","room":"guarded","name":"x","role":"host","resume":"resume-audience:pada"}"#);
    let role = again
        .until(|m| match m {
            ServerMessage::Joined { role, .. } => Some(*role),
            _ => None,
        })
        .await;
    assert_eq!(role, Role::Audience);
}

#[tokio::test]
async fn a_resumed_participant_takes_over_its_old_session_without_leaving() {
    let (engine, _commands) = EngineHandle::new();
    let rooms = RoomDirectory::new();
    let mut ada = Client::start("pada", &engine, &rooms).await;
    ada.say(r#"{"type":"join","room":"r1","name":"Ada"}"#);
    let ServerMessage::Joined {
        resume_token,
        alternates,
        ..
    } = ada.next().await
    else {
        panic!("expected joined")
    };
    assert_eq!(resume_token, "resume:pada");
    assert_eq!(alternates, vec!["ws://alt/ws".to_string()]);

    let mut bob = Client::start("pbob", &engine, &rooms).await;
    bob.say(r#"{"type":"join","room":"r1","name":"Bob"}"#);
    bob.until(|m| matches!(m, ServerMessage::Joined { .. }).then_some(()))
        .await;
    ada.until(|m| matches!(m, ServerMessage::ParticipantJoined { .. }).then_some(()))
        .await;

    // Bob comes back in a new session (his old one still open) with his token.
    let mut again = Client::start("pnew", &engine, &rooms).await;
    again.say(r#"{"type":"join","room":"r1","name":"x","resume":"resume:pbob"}"#);
    let ServerMessage::Joined {
        participant,
        participants,
        ..
    } = again.next().await
    else {
        panic!("expected joined")
    };
    assert_eq!(participant, ParticipantId("pbob".into()));
    assert_eq!(
        participants.len(),
        1,
        "the snapshot lists Ada, not Bob's old self"
    );
    // The old session is told and closed; its leave does not remove the new one.
    bob.until(|m| {
        matches!(
            m,
            ServerMessage::Error {
                code: ErrorCode::Unavailable,
                fatal: true,
                ..
            }
        )
        .then_some(())
    })
    .await;
    ada.say(r#"{"type":"chat","text":"still there?"}"#);
    let text = again
        .until(|m| match m {
            ServerMessage::Chat { text, .. } => Some(text.clone()),
            _ => None,
        })
        .await;
    assert_eq!(text, "still there?");
    // Ada saw neither a leave nor a second join of Bob.
    ada.say(r#"{"type":"chat","text":"marker"}"#);
    loop {
        match ada.next().await {
            ServerMessage::ParticipantLeft { .. } | ServerMessage::ParticipantJoined { .. } => {
                panic!("a resume must not look like a leave and a join")
            }
            ServerMessage::Chat { text, .. } if text == "marker" => break,
            _ => {}
        }
    }
    assert_eq!(rooms.list()[0].1.members, 2);
}
