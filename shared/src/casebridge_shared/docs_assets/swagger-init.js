// Starts Swagger UI on /docs (casebridge_shared.web.docs_router). A file, not an inline
// script, so the page's Content-Security-Policy allows scripts from 'self' only. The spec and
// OAuth2 redirect URLs come from the page's data attributes.
"use strict";
(function () {
  const root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.dataset.openapiUrl,
    dom_id: "#swagger-ui",
    layout: "BaseLayout",
    deepLinking: true,
    showExtensions: true,
    showCommonExtensions: true,
    validatorUrl: null, // no call to validator.swagger.io
    oauth2RedirectUrl: window.location.origin + root.dataset.oauth2RedirectUrl,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
  });
})();
