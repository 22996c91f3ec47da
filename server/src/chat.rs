//! Chat rooms (`call/ROOM`, `live/NAME`): the async glue around the protocol crate's
//! [`RoomLog`], which holds the rules (stored once, numbered, a bounded log to replay from).
//! Here: who is in which room, and each member's bounded queue towards its connection.

use std::collections::HashMap;
use std::sync::Mutex;

use chunkcast_protocol::ErrorCode;
use chunkcast_protocol::chat::{DEFAULT_ROOM_AUTHORS, DEFAULT_ROOM_LOG, RoomLog, Submitted};
use chunkcast_protocol::wire::{Chat, Frame};
use chunkcast_transport::LinkTx;
use tokio::sync::mpsc;

/// Chat rooms at once; an empty room is forgotten to make space for a new one.
const MAX_ROOMS: usize = 256;
/// Chat rooms one connection may join.
const MAX_ROOMS_PER_SESSION: usize = 4;
/// Members of one room (a call has two; a live channel's chat, its viewers).
const MAX_MEMBERS: usize = 1024;
/// Frames queued towards one member: a replay of the whole log fits. A member whose queue
/// is full misses messages, sees the hole in the room's numbers and joins again, which
/// replays them: the server never waits on a slow reader.
const MEMBER_QUEUE: usize = DEFAULT_ROOM_LOG + 64;

/// Why a chat frame was refused: the connection is closed with this.
pub(crate) type Refusal = (ErrorCode, String);

struct Room {
    log: RoomLog,
    members: HashMap<u64, mpsc::Sender<Frame>>,
}

/// Every chat room of the server.
#[derive(Default)]
pub(crate) struct Chats {
    rooms: Mutex<HashMap<String, Room>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// `call/ROOM` or `live/NAME`, with the names live channels and calls allow.
fn valid_room(room: &str) -> bool {
    let ok_part = |p: &str| {
        !p.is_empty()
            && p.len() <= 64
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            && p != "."
            && p != ".."
    };
    matches!(room.split('/').collect::<Vec<_>>().as_slice(), ["call" | "live", name] if ok_part(name))
}

impl Chats {
    /// `session` joins `chat.room` (again, after a reconnection or a hole): the messages
    /// after `chat.seq` that the room still holds are queued to it, then every new one.
    pub(crate) fn join(&self, session: u64, chat: &Chat, tx: &LinkTx) -> Result<(), Refusal> {
        if !valid_room(&chat.room) {
            return Err((
                ErrorCode::ChatRefused,
                format!(
                    "bad chat room {:?}: use call/ROOM or live/NAME (letters, digits, '-', '_', '.')",
                    chat.room
                ),
            ));
        }
        let mut rooms = lock(&self.rooms);
        let held = rooms
            .iter()
            .filter(|(name, r)| **name != chat.room && r.members.contains_key(&session))
            .count();
        if held >= MAX_ROOMS_PER_SESSION {
            return Err((
                ErrorCode::ChatRefused,
                format!("this connection is in {held} chat rooms already"),
            ));
        }
        if !rooms.contains_key(&chat.room) && rooms.len() >= MAX_ROOMS {
            let empty = rooms
                .iter()
                .find(|(_, r)| r.members.is_empty())
                .map(|(n, _)| n.clone());
            match empty {
                Some(name) => drop(rooms.remove(&name)),
                None => return Err((ErrorCode::Busy, "too many chat rooms".into())),
            }
        }
        let room = rooms.entry(chat.room.clone()).or_insert_with(|| Room {
            log: RoomLog::new(&chat.room, DEFAULT_ROOM_LOG, DEFAULT_ROOM_AUTHORS),
            members: HashMap::new(),
        });
        if !room.members.contains_key(&session) && room.members.len() >= MAX_MEMBERS {
            return Err((ErrorCode::Busy, format!("chat room {} is full", chat.room)));
        }
        // A rejoin gets a fresh queue: what the old one still held is replayed anyway.
        let (queue, mut frames) = mpsc::channel(MEMBER_QUEUE);
        let writer = tx.clone();
        tokio::spawn(async move {
            while let Some(f) = frames.recv().await {
                if writer.send(f).await.is_err() {
                    break;
                }
            }
        });
        for m in room.log.since(chat.seq) {
            if queue.try_send(Frame::Chat(m.clone())).is_err() {
                break;
            }
        }
        room.members.insert(session, queue);
        Ok(())
    }

    /// A message of `session`, which must have joined the room: stored once and relayed to
    /// every member (the writer too, so that it sees the room's order). Returns the ack.
    pub(crate) fn send(&self, session: u64, chat: &Chat) -> Result<Chat, Refusal> {
        let mut rooms = lock(&self.rooms);
        let Some(room) = rooms
            .get_mut(&chat.room)
            .filter(|r| r.members.contains_key(&session))
        else {
            return Err((
                ErrorCode::ChatRefused,
                format!("chat message to {:?}, a room not joined", chat.room),
            ));
        };
        match room.log.submit(chat) {
            Ok(Submitted::Duplicate { ack }) => Ok(ack),
            Ok(Submitted::Stored { message, ack }) => {
                for queue in room.members.values() {
                    // Full: that member will see the hole and rejoin (see MEMBER_QUEUE).
                    let _ = queue.try_send(Frame::Chat(message.clone()));
                }
                Ok(ack)
            }
            Err(e) => Err((ErrorCode::ChatRefused, e.to_string())),
        }
    }

    /// `session`'s connection is gone: it leaves every room (the rooms and their logs stay,
    /// for its reconnection).
    pub(crate) fn leave(&self, session: u64) {
        for room in lock(&self.rooms).values_mut() {
            room.members.remove(&session);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rooms_are_call_or_live_names() {
        assert!(valid_room("call/standup"));
        assert!(valid_room("live/radio-1"));
        assert!(!valid_room("call/a/b"));
        assert!(!valid_room("call/.."));
        assert!(!valid_room("files/x"));
        assert!(!valid_room("call/"));
    }
}
