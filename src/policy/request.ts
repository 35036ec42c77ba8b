// A Postfix SMTPD access policy request (SMTPD_POLICY_README; postfix.md §1.2)
// as a typed value. Every attribute Postfix 3.7 sends is here; attributes that
// are absent arrive as '' (or 0), as Postfix itself sends empty values, and
// unknown ones (3.8's compatibility_level, 3.12's tls_sni...) are kept in
// `attributes` only.

export interface PolicyRequest {
  /** Always `smtpd_access_policy` from smtpd. */
  readonly request: string;
  /** CONNECT, EHLO, HELO, MAIL, RCPT, DATA, END-OF-MESSAGE, VRFY, ETRN. */
  readonly protocolState: string;
  /** SMTP or ESMTP. */
  readonly protocolName: string;
  /** IPv4 or IPv6 text as Postfix prints it (no brackets, no IPv6: prefix). */
  readonly clientAddress: string;
  /** Verified (forward-confirmed) client name, or `unknown`. */
  readonly clientName: string;
  /** PTR name, not verified, or `unknown`. */
  readonly reverseClientName: string;
  readonly clientPort: string;
  readonly serverAddress: string;
  readonly serverPort: string;
  readonly heloName: string;
  /** Envelope sender; '' is the null sender <>. */
  readonly sender: string;
  /** Envelope recipient at RCPT (and at DATA/EOM when exactly one was accepted). */
  readonly recipient: string;
  /** Non-zero only at DATA / END-OF-MESSAGE. */
  readonly recipientCount: number;
  readonly queueId: string;
  /** Same for every request about one message over one connection; '' before MAIL FROM. */
  readonly instance: string;
  /** MAIL FROM SIZE=, or the real size at END-OF-MESSAGE; 0 when unknown. */
  readonly size: number;
  readonly etrnDomain: string;
  /** Postfix is under stress (postconf stress=yes). */
  readonly stress: boolean;
  readonly saslMethod: string;
  /** The SASL login; '' when the client did not authenticate. */
  readonly saslUsername: string;
  readonly saslSender: string;
  readonly ccertSubject: string;
  readonly ccertIssuer: string;
  readonly ccertFingerprint: string;
  readonly ccertPubkeyFingerprint: string;
  readonly encryptionProtocol: string;
  readonly encryptionCipher: string;
  readonly encryptionKeysize: number;
  /** smtpd_policy_service_policy_context, or the per-client `policy_context=` override. */
  readonly policyContext: string;
  /** Every attribute as received, unknown ones included (the last value of a repeated name). */
  readonly attributes: ReadonlyMap<string, string>;
}

/** Attribute name → PolicyRequest field for the string fields. */
export const STRING_ATTRIBUTES = {
  request: 'request',
  protocol_state: 'protocolState',
  protocol_name: 'protocolName',
  client_address: 'clientAddress',
  client_name: 'clientName',
  reverse_client_name: 'reverseClientName',
  client_port: 'clientPort',
  server_address: 'serverAddress',
  server_port: 'serverPort',
  helo_name: 'heloName',
  sender: 'sender',
  recipient: 'recipient',
  queue_id: 'queueId',
  instance: 'instance',
  etrn_domain: 'etrnDomain',
  sasl_method: 'saslMethod',
  sasl_username: 'saslUsername',
  sasl_sender: 'saslSender',
  ccert_subject: 'ccertSubject',
  ccert_issuer: 'ccertIssuer',
  ccert_fingerprint: 'ccertFingerprint',
  ccert_pubkey_fingerprint: 'ccertPubkeyFingerprint',
  encryption_protocol: 'encryptionProtocol',
  encryption_cipher: 'encryptionCipher',
  policy_context: 'policyContext',
} as const satisfies Record<string, keyof PolicyRequest>;

/** Attribute name → PolicyRequest field for the numeric fields (non-numbers read as 0). */
export const NUMBER_ATTRIBUTES = {
  recipient_count: 'recipientCount',
  size: 'size',
  encryption_keysize: 'encryptionKeysize',
} as const satisfies Record<string, keyof PolicyRequest>;

/** A request with every field empty; tests and `mailwarden policy test` start from it. */
export function policyRequest(fields: Partial<Omit<PolicyRequest, 'attributes'>> & { attributes?: ReadonlyMap<string, string> } = {}): PolicyRequest {
  return {
    request: 'smtpd_access_policy',
    protocolState: 'RCPT',
    protocolName: 'ESMTP',
    clientAddress: '',
    clientName: 'unknown',
    reverseClientName: 'unknown',
    clientPort: '',
    serverAddress: '',
    serverPort: '',
    heloName: '',
    sender: '',
    recipient: '',
    recipientCount: 0,
    queueId: '',
    instance: '',
    size: 0,
    etrnDomain: '',
    stress: false,
    saslMethod: '',
    saslUsername: '',
    saslSender: '',
    ccertSubject: '',
    ccertIssuer: '',
    ccertFingerprint: '',
    ccertPubkeyFingerprint: '',
    encryptionProtocol: '',
    encryptionCipher: '',
    encryptionKeysize: 0,
    policyContext: '',
    attributes: new Map(),
    ...fields,
  };
}
