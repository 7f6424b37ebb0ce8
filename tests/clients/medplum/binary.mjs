// Medplum's client against a running fhirfus: upload an attachment as a Binary, read it back.
// Usage: node binary.mjs http://127.0.0.1:PORT/   (fhirfus answers under /fhir)
// With FHIRFUS_TOKEN set, every request carries it as a bearer token (SMART authentication on).
// Prints one JSON line with what came back; the pytest test (tests/system/test_medplum_client.py) judges it.
// @medplum/core touches WebSocket when it loads; Node < 22 has none without a flag, and this test
// never opens one (subscriptions only), so a placeholder is enough there.
globalThis.WebSocket ??= class WebSocket {};
const { MedplumClient } = await import('@medplum/core');

const medplum = new MedplumClient({
  baseUrl: process.argv[2],
  fhirUrlPath: 'fhir',
  fetch: globalThis.fetch,
  ...(process.env.FHIRFUS_TOKEN ? { accessToken: process.env.FHIRFUS_TOKEN } : {}),
});

const patient = await medplum.createResource({ resourceType: 'Patient', name: [{ family: 'Medplum' }] });
const bytes = Uint8Array.from({ length: 2048 }, (_, i) => (i * 37 + 11) % 256);
const binary = await medplum.createBinary({
  data: bytes,
  contentType: 'application/pdf',
  filename: 'report.pdf',
  securityContext: { reference: `Patient/${patient.id}` },
});
const asResource = await medplum.readResource('Binary', binary.id);
const blob = await medplum.download(`Binary/${binary.id}`);
const downloaded = new Uint8Array(await blob.arrayBuffer());
const text = await medplum.createBinary({ data: 'TWSTRS notes: ütf-8', contentType: 'text/plain; charset=utf-8' });
const textBack = await (await medplum.download(`Binary/${text.id}`)).text();

console.log(JSON.stringify({
  id: binary.id,
  created: { resourceType: binary.resourceType, contentType: binary.contentType, securityContext: binary.securityContext },
  read: { contentType: asResource.contentType, securityContext: asResource.securityContext, dataLength: asResource.data?.length },
  download: { type: blob.type, size: downloaded.length, same: downloaded.every((b, i) => b === bytes[i]) && downloaded.length === bytes.length },
  text: textBack,
  patient: patient.id,
}));
