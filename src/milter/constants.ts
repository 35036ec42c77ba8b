// Sendmail milter protocol constants, as in libmilter 8.17.1.9 (Debian
// libmilter-dev: /usr/include/libmilter/mfdef.h and mfapi.h) and Postfix's own
// copy in pf:src/milter/milter8.c. postfix.md §3.

/** SMFI_PROT_VERSION: the protocol version we speak, and the one Postfix 3.7 offers (`milter_protocol = 6`). */
export const SMFI_PROT_VERSION = 6;

/** Largest body chunk an MTA sends in one `B` packet (Postfix and Sendmail). */
export const MILTER_CHUNK_SIZE = 65535;

/** Commands MTA → milter (SMFIC_*). */
export const SMFIC = {
  ABORT: 'A',
  BODY: 'B',
  CONNECT: 'C',
  MACRO: 'D',
  BODYEOB: 'E',
  HELO: 'H',
  /** QUIT, but a new connection follows; defined, never sent by Postfix. */
  QUIT_NC: 'K',
  HEADER: 'L',
  MAIL: 'M',
  EOH: 'N',
  OPTNEG: 'O',
  QUIT: 'Q',
  RCPT: 'R',
  DATA: 'T',
  UNKNOWN: 'U',
} as const;

/** Replies milter → MTA (SMFIR_*). */
export const SMFIR = {
  ADDRCPT: '+',
  DELRCPT: '-',
  ADDRCPT_PAR: '2',
  /** 421 and close; internal to Sendmail, Postfix honours it. */
  SHUTDOWN: '4',
  ACCEPT: 'a',
  REPLBODY: 'b',
  CONTINUE: 'c',
  DISCARD: 'd',
  CHGFROM: 'e',
  /** Defined in mfdef.h; Postfix treats it as a protocol error. */
  CONN_FAIL: 'f',
  ADDHEADER: 'h',
  INSHEADER: 'i',
  /** Only ever sent inside the OPTNEG reply (the trailing macro lists), never as a packet of its own. */
  SETSYMLIST: 'l',
  CHGHEADER: 'm',
  PROGRESS: 'p',
  QUARANTINE: 'q',
  REJECT: 'r',
  SKIP: 's',
  TEMPFAIL: 't',
  REPLYCODE: 'y',
} as const;

/** Actions (SMFIF_*): the modifications a milter may request at end of message. */
export const SMFIF = {
  ADDHDRS: 0x01,
  CHGBODY: 0x02,
  ADDRCPT: 0x04,
  DELRCPT: 0x08,
  CHGHDRS: 0x10,
  QUARANTINE: 0x20,
  CHGFROM: 0x40,
  ADDRCPT_PAR: 0x80,
  SETSYMLIST: 0x100,
} as const;

/** SMFI_CURR_ACTS: every action of protocol 6. Postfix 3.7 offers exactly this. */
export const SMFI_CURR_ACTS = 0x1ff;

/** Protocol flags (SMFIP_*): steps the milter wants skipped, replies it will not send, and extensions. */
export const SMFIP = {
  NOCONNECT: 0x1,
  NOHELO: 0x2,
  NOMAIL: 0x4,
  NORCPT: 0x8,
  NOBODY: 0x10,
  NOHDRS: 0x20,
  NOEOH: 0x40,
  /** = SMFIP_NOHREPL: no reply to each header (Postfix then pipelines the headers). */
  NR_HDR: 0x80,
  NOUNKNOWN: 0x100,
  NODATA: 0x200,
  /** The MTA understands SMFIR_SKIP. */
  SKIP: 0x400,
  /** Also send rejected RCPTs ({rcpt_mailer} = "error"). */
  RCPT_REJ: 0x800,
  NR_CONN: 0x1000,
  NR_HELO: 0x2000,
  NR_MAIL: 0x4000,
  NR_RCPT: 0x8000,
  NR_DATA: 0x10000,
  NR_UNKN: 0x20000,
  NR_EOH: 0x40000,
  NR_BODY: 0x80000,
  /** Header values keep their leading space, in both directions. */
  HDR_LEADSPC: 0x100000,
  /** libmilter-internal buffer sizes; Postfix ignores them. */
  MDS_256K: 0x10000000,
  MDS_1M: 0x20000000,
} as const;

/** SMFI_CURR_PROT: every protocol flag of version 6. Postfix 3.7 offers exactly this. */
export const SMFI_CURR_PROT = 0x1fffff;

/** Address families in SMFIC_CONNECT (SMFIA_*). */
export const SMFIA = {
  UNKNOWN: 'U',
  UNIX: 'L',
  INET: '4',
  INET6: '6',
} as const;

/** Macro stages (SMFIM_*) for the macro lists in the OPTNEG reply (mfapi.h; note EOM < EOH). */
export const SMFIM = {
  CONNECT: 0,
  HELO: 1,
  ENVFROM: 2,
  ENVRCPT: 3,
  DATA: 4,
  EOM: 5,
  EOH: 6,
} as const;

/** What Postfix 3.7 sends in its OPTNEG with the default `milter_protocol = 6` (milter8_connect()). */
export const POSTFIX_OPTNEG = Object.freeze({ version: SMFI_PROT_VERSION, actions: SMFI_CURR_ACTS, protocol: SMFI_CURR_PROT });
