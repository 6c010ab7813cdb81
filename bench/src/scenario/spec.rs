//! `scenario::spec`: the benchmark scenarios by name and what each one runs — pure, no I/O.
//!
//! Owns [`Scenario`] (parsed from the fixed names `fanout-N`, `meeting-N`, `classroom`,
//! `cascade-2`; any N parses, and `classroom-N` too, so a smoke run can use `fanout-5`, but
//! results are comparable only under the names the README lists) and [`Plan`]: the publishers
//! with their media, and every subscription as (subscriber, publisher, layer cap). A
//! subscription is one WebRTC session of its own, on Kaskade (WHEP to one publisher) and on Janus
//! (one subscriber handle to one feed) alike.

use std::fmt;
use std::str::FromStr;

use crate::loadgen::LayerCap;
use crate::loadgen::session::PublisherSpec;
use crate::loadgen::synthetic::{VideoConfig, VideoLayerSpec};

/// Opus-sized audio of every publisher, bit/s.
pub const AUDIO_BPS: u32 = 48_000;
/// Video of the fan-out publisher, bit/s.
pub const FANOUT_VIDEO_BPS: u32 = 1_000_000;
/// Video of each meeting participant, bit/s (a mid-size tile).
pub const MEETING_VIDEO_BPS: u32 = 500_000;
/// The classroom teacher's camera: three simulcast layers q/h/f, bit/s.
pub const TEACHER_LAYERS_BPS: [u32; 3] = [150_000, 500_000, 1_500_000];
/// The classroom teacher's screen share: one layer, bit/s, at [`SCREEN_FPS`].
pub const SCREEN_BPS: u32 = 800_000;
pub const SCREEN_FPS: u32 = 15;
/// Students of the classroom who speak (audio only).
pub const SPEAKERS: usize = 5;
/// Students of `classroom`.
pub const CLASSROOM_STUDENTS: usize = 1000;
/// Students of `classroom-2sites` (the teacher on site A, students spread over both sites).
pub const CLASSROOM_2SITES_STUDENTS: usize = 2000;
/// Marker stream ids of publisher `i` start at `1 + i * STREAMS_PER_PUBLISHER` (audio first,
/// then one per video layer).
pub const STREAMS_PER_PUBLISHER: u32 = 10;

/// A scenario by its fixed name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// 1 publisher (audio + 1 Mbit/s video) → N subscribers.
    Fanout(usize),
    /// N participants, each publishing audio + video and subscribing to all others.
    Meeting(usize),
    /// fanout-500 over two nodes in two sites (Kaskade only: Janus does not cascade).
    Cascade2,
    /// A teacher (audio + 3-layer simulcast camera + screen share) and 5 speaking students →
    /// N students on the camera's low layer.
    Classroom(usize),
    /// `Classroom(n)` with the teacher and speakers on site A's node and the students spread
    /// round robin over site A's and site B's nodes (Kaskade only).
    Classroom2Sites(usize),
}

/// A name that is not a scenario.
#[derive(Debug, thiserror::Error)]
#[error("unknown scenario {0:?}: expected fanout-N, meeting-N, classroom[-N] or cascade-2")]
pub struct UnknownScenario(pub String);

impl FromStr for Scenario {
    type Err = UnknownScenario;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let number = |rest: &str| rest.parse::<usize>().ok().filter(|n| *n >= 1);
        if let Some(n) = s.strip_prefix("fanout-").and_then(number) {
            return Ok(Self::Fanout(n));
        }
        if let Some(n) = s
            .strip_prefix("meeting-")
            .and_then(number)
            .filter(|n| *n >= 2)
        {
            return Ok(Self::Meeting(n));
        }
        if s == "cascade-2" {
            return Ok(Self::Cascade2);
        }
        if s == "classroom-2sites" {
            return Ok(Self::Classroom2Sites(CLASSROOM_2SITES_STUDENTS));
        }
        if let Some(n) = s.strip_prefix("classroom-2sites-").and_then(number) {
            return Ok(Self::Classroom2Sites(n));
        }
        if s == "classroom" {
            return Ok(Self::Classroom(CLASSROOM_STUDENTS));
        }
        if let Some(n) = s.strip_prefix("classroom-").and_then(number) {
            return Ok(Self::Classroom(n));
        }
        Err(UnknownScenario(s.to_owned()))
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Fanout(n) => write!(f, "fanout-{n}"),
            Self::Meeting(n) => write!(f, "meeting-{n}"),
            Self::Cascade2 => write!(f, "cascade-2"),
            Self::Classroom(CLASSROOM_STUDENTS) => write!(f, "classroom"),
            Self::Classroom(n) => write!(f, "classroom-{n}"),
            Self::Classroom2Sites(CLASSROOM_2SITES_STUDENTS) => write!(f, "classroom-2sites"),
            Self::Classroom2Sites(n) => write!(f, "classroom-2sites-{n}"),
        }
    }
}

impl Scenario {
    /// Whether Janus can run it (it has no cascade between servers).
    pub fn janus_can_run(&self) -> bool {
        !matches!(self, Self::Cascade2 | Self::Classroom2Sites(_))
    }

    /// Sites (and nodes) Kaskade runs it on.
    pub fn sites(&self) -> usize {
        match self {
            Self::Cascade2 | Self::Classroom2Sites(_) => 2,
            _ => 1,
        }
    }

    /// One line saying what the scenario is.
    pub fn describe(&self) -> String {
        match self {
            Self::Fanout(n) => format!(
                "1 publisher (audio {} kbit/s + video {} kbit/s) → {n} subscribers",
                AUDIO_BPS / 1000,
                FANOUT_VIDEO_BPS / 1000
            ),
            Self::Meeting(n) => format!(
                "{n} participants, each publishing audio {} kbit/s + video {} kbit/s and \
                 subscribing to the {} others",
                AUDIO_BPS / 1000,
                MEETING_VIDEO_BPS / 1000,
                n - 1
            ),
            Self::Cascade2 => format!(
                "1 publisher (audio {} kbit/s + video {} kbit/s) on site A → 500 subscribers, \
                 half on site A's node, half on site B's",
                AUDIO_BPS / 1000,
                FANOUT_VIDEO_BPS / 1000
            ),
            Self::Classroom(n) => format!(
                "teacher (audio + camera simulcast {}/{}/{} kbit/s + screen {} kbit/s) and \
                 {SPEAKERS} speaking students → {n} students, each with one session per \
                 publisher, camera on its low layer",
                TEACHER_LAYERS_BPS[0] / 1000,
                TEACHER_LAYERS_BPS[1] / 1000,
                TEACHER_LAYERS_BPS[2] / 1000,
                SCREEN_BPS / 1000
            ),
            Self::Classroom2Sites(n) => format!(
                "{}; teacher and speakers on site A, the students half on site A's node, half \
                 on site B's",
                Self::Classroom(*n).describe()
            ),
        }
    }

    /// What to run.
    pub fn plan(&self) -> Plan {
        match *self {
            Self::Fanout(n) => Plan::fanout(n, 1),
            Self::Cascade2 => Plan::fanout(500, 2),
            Self::Meeting(n) => {
                let publishers = (0..n)
                    .map(|i| PublisherPlan::new(i, MEETING_VIDEO_BPS, 0))
                    .collect();
                let subscriptions = (0..n)
                    .flat_map(|s| {
                        (0..n).filter(move |p| *p != s).map(move |p| Subscription {
                            subscriber: s,
                            publisher: p,
                            site: 0,
                            layer: None,
                        })
                    })
                    .collect();
                Plan {
                    publishers,
                    subscriptions,
                }
            }
            Self::Classroom(n) => Plan::classroom(n, 1),
            Self::Classroom2Sites(n) => Plan::classroom(n, 2),
        }
    }
}

/// One publisher of a plan.
#[derive(Clone, Debug)]
pub struct PublisherPlan {
    pub spec: PublisherSpec,
    /// Site whose node it publishes to (0 unless cascaded).
    pub site: usize,
}

impl PublisherPlan {
    fn new(index: usize, video_bps: u32, site: usize) -> Self {
        Self::with(
            index,
            Some(AUDIO_BPS),
            Some(VideoConfig::single(video_bps)),
            site,
        )
    }

    fn with(index: usize, audio_bps: Option<u32>, video: Option<VideoConfig>, site: usize) -> Self {
        Self {
            spec: PublisherSpec {
                audio_bps,
                video,
                first_stream: 1 + index as u32 * STREAMS_PER_PUBLISHER,
            },
            site,
        }
    }
}

/// One subscription: `subscriber` (an index among the plan's subscribers; in a meeting, the
/// participant's index) receives `publisher`'s tracks through a node of `site`, video at most
/// at `layer`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Subscription {
    pub subscriber: usize,
    pub publisher: usize,
    pub site: usize,
    pub layer: Option<LayerCap>,
}

/// Publishers and subscriptions of one scenario.
#[derive(Clone, Debug)]
pub struct Plan {
    pub publishers: Vec<PublisherPlan>,
    pub subscriptions: Vec<Subscription>,
}

impl Plan {
    /// One publisher on site 0 → `n` subscribers spread round robin over `sites`.
    fn fanout(n: usize, sites: usize) -> Self {
        Self {
            publishers: vec![PublisherPlan::new(0, FANOUT_VIDEO_BPS, 0)],
            subscriptions: (0..n)
                .map(|i| Subscription {
                    subscriber: i,
                    publisher: 0,
                    site: i % sites.max(1),
                    layer: None,
                })
                .collect(),
        }
    }

    /// Publisher 0: the teacher's audio and simulcast camera; 1: the teacher's screen share;
    /// 2..: the speaking students' audio. Every one of `n` students subscribes to each of them,
    /// the camera capped at its low layer. Publishers are on site 0, students round robin over
    /// `sites`.
    fn classroom(n: usize, sites: usize) -> Self {
        let [q, h, f] = TEACHER_LAYERS_BPS;
        let camera = VideoConfig {
            layers: VideoLayerSpec::simulcast(q, h, f),
            ..VideoConfig::single(f)
        };
        let screen = VideoConfig {
            fps: SCREEN_FPS,
            ..VideoConfig::single(SCREEN_BPS)
        };
        let mut publishers = vec![
            PublisherPlan::with(0, Some(AUDIO_BPS), Some(camera), 0),
            PublisherPlan::with(1, None, Some(screen), 0),
        ];
        publishers
            .extend((0..SPEAKERS).map(|i| PublisherPlan::with(2 + i, Some(AUDIO_BPS), None, 0)));
        let subscriptions = (0..n)
            .flat_map(|s| {
                (0..2 + SPEAKERS).map(move |p| Subscription {
                    subscriber: s,
                    publisher: p,
                    site: s % sites.max(1),
                    layer: (p == 0).then_some(LayerCap::Low),
                })
            })
            .collect();
        Self {
            publishers,
            subscriptions,
        }
    }

    /// Whether marker stream `id` is an audio stream.
    pub fn is_audio_stream(&self, id: u32) -> bool {
        self.publishers
            .iter()
            .any(|p| p.spec.audio_bps.is_some() && p.spec.first_stream == id)
    }

    /// Tracks each publisher sends (audio + video).
    pub fn tracks_of(&self, publisher: usize) -> usize {
        let spec = &self.publishers[publisher].spec;
        usize::from(spec.audio_bps.is_some()) + usize::from(spec.video.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_bad_names_are_refused() {
        for name in ["fanout-100", "fanout-5", "meeting-25", "cascade-2"] {
            assert_eq!(name.parse::<Scenario>().unwrap().to_string(), name);
        }
        assert_eq!(
            "classroom".parse::<Scenario>().unwrap(),
            Scenario::Classroom(CLASSROOM_STUDENTS)
        );
        assert_eq!(Scenario::Classroom(3).to_string(), "classroom-3");
        for bad in [
            "fanout-0",
            "fanout-",
            "fanout-x",
            "meeting-1",
            "classroom-0",
            "cascade-3",
            "",
        ] {
            assert!(bad.parse::<Scenario>().is_err(), "{bad}");
        }
        assert!(!Scenario::Cascade2.janus_can_run());
        assert_eq!(
            "classroom-2sites".parse::<Scenario>().unwrap(),
            Scenario::Classroom2Sites(CLASSROOM_2SITES_STUDENTS)
        );
        assert_eq!(
            Scenario::Classroom2Sites(8).to_string(),
            "classroom-2sites-8"
        );
        assert_eq!(
            "classroom-2sites-8".parse::<Scenario>().unwrap(),
            Scenario::Classroom2Sites(8)
        );
        assert!(!Scenario::Classroom2Sites(8).janus_can_run());
        assert_eq!(Scenario::Classroom2Sites(8).sites(), 2);
        assert!(Scenario::Meeting(10).janus_can_run());
    }

    #[test]
    fn meeting_subscribes_everyone_to_everyone_else() {
        let plan = Scenario::Meeting(4).plan();
        assert_eq!(plan.publishers.len(), 4);
        assert_eq!(plan.subscriptions.len(), 12);
        assert!(
            plan.subscriptions
                .iter()
                .all(|s| s.subscriber != s.publisher)
        );
        let firsts: Vec<u32> = plan
            .publishers
            .iter()
            .map(|p| p.spec.first_stream)
            .collect();
        assert_eq!(firsts, [1, 11, 21, 31]);
        assert!(plan.is_audio_stream(11) && !plan.is_audio_stream(12));
        assert_eq!(plan.tracks_of(3), 2);
    }

    #[test]
    fn classroom_students_take_the_low_camera_layer_and_everything_else() {
        let plan = Scenario::Classroom(4).plan();
        assert_eq!(plan.publishers.len(), 2 + SPEAKERS);
        assert_eq!(plan.subscriptions.len(), 4 * (2 + SPEAKERS));
        let camera = &plan.publishers[0].spec;
        assert_eq!(camera.video.as_ref().unwrap().layers.len(), 3);
        assert!(plan.publishers[1].spec.audio_bps.is_none());
        assert!(plan.publishers[2..].iter().all(|p| p.spec.video.is_none()));
        for s in &plan.subscriptions {
            assert_eq!(s.layer.is_some(), s.publisher == 0, "{s:?}");
        }
        assert_eq!(
            (plan.tracks_of(0), plan.tracks_of(1), plan.tracks_of(2)),
            (2, 1, 1)
        );
    }

    #[test]
    fn cascade_splits_the_audience_over_two_sites() {
        let plan = Scenario::Cascade2.plan();
        assert_eq!(plan.subscriptions.len(), 500);
        let on_b = plan.subscriptions.iter().filter(|s| s.site == 1).count();
        assert_eq!(on_b, 250);
        assert_eq!(plan.publishers[0].site, 0);
        let classroom = Scenario::Classroom2Sites(6).plan();
        assert!(classroom.publishers.iter().all(|p| p.site == 0));
        for s in &classroom.subscriptions {
            assert_eq!(s.site, s.subscriber % 2, "{s:?}");
        }
        let fanout = Scenario::Fanout(3).plan();
        assert!(fanout.subscriptions.iter().all(|s| s.site == 0));
    }
}
