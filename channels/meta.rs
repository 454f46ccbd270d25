//! The Graph API shape that WhatsApp Cloud and Messenger share (skeleton).
