<%inherit file="base.mako"/>
<p>${message}</p>
