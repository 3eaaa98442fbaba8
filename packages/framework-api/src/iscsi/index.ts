export * from './iscsi-records.js';
export * from './iscsi-secrets.js';
export * from './iscsi-target-spec.js';
